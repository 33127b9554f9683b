"""Single-clip inference latency of one run folder, every format side by side in one run.

    python bench/inference.py saved_models/<run> [--repeats 200]

Keras `model(x)` and `model.predict(x)`, the SavedModel's `serve`, and each .tflite in the run
folder in the LiteRT interpreter. Targets: TFLite fp32 <= 1/10 of model.predict and <= 1/2 of model(x).
Run `python -m nsynth_keras.export <run>` first to time every TFLite variant.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nsynth_keras.core.config import INPUT_SHAPE, NUM_SAMPLES  # noqa: E402
from nsynth_keras.core.files import write_json  # noqa: E402
from nsynth_keras.deploy.inference import TFLiteClassifier  # noqa: E402
from nsynth_keras.models.runs import find_model, load_keras  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    for _ in range(5):
        fn()  # warm-up: tracing, allocation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, *INPUT_SHAPE)).astype(np.float32)
    wave = (0.1 * rng.standard_normal((1, NUM_SAMPLES))).astype(np.float32)
    model = load_keras(find_model(args.run))
    rows = {
        "keras model(x)": median_ms(lambda: model(x, training=False), args.repeats),
        "keras model.predict(x)": median_ms(lambda: model.predict(x, verbose=0), max(20, args.repeats // 5)),
    }
    sm = os.path.join(args.run, "saved_model")
    if os.path.isdir(sm):
        loaded = tf.saved_model.load(sm)  # keep the object: serve() needs its variables
        rows["saved_model serve(x)"] = median_ms(lambda: loaded.serve(x), args.repeats)
    for path in sorted(glob.glob(os.path.join(args.run, "*.tflite"))):
        clf = TFLiteClassifier(path)
        inp = wave if clf.takes_waveform else x
        rows[f"tflite {os.path.basename(path)}"] = median_ms(lambda c=clf, i=inp: c.predict(i), args.repeats)
    print(f"{'model':<40}{'ms/clip (median)':>18}")
    for name, ms in rows.items():
        print(f"{name:<40}{ms:>18.3f}")
    fp32 = rows.get("tflite model_fp32.tflite", rows.get("tflite model.tflite"))
    result = {"latency_ms": rows}
    if fp32:
        result["targets"] = {
            "tflite fp32 <= 1/10 of model.predict": fp32 <= rows["keras model.predict(x)"] / 10,
            "tflite fp32 <= 1/2 of model(x)": fp32 <= rows["keras model(x)"] / 2,
        }
        print(json.dumps(result["targets"], indent=2))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
