"""The on-device check: run every exported .tflite in the standalone LiteRT interpreter on
real notes and compare it with the Keras model.

    python -m nsynth_keras.tflite_check saved_models/<run> --data-dir ../shared/nsynth --split test

Prints, per model: file size, top-1 agreement with Keras, max |probability difference|,
accuracy and mean single-clip latency. Exits 1 if a model falls below its threshold.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np
import tensorflow as tf

from nsynth_keras.data import DataError, DataSpec, add_data_args, make_dataset, spec_from_args
from nsynth_keras.features import log_mel
from nsynth_keras.inference import KerasClassifier, TFLiteClassifier
from nsynth_keras.runs import RunError, find_model, write_json

# Minimum top-1 agreement with the Keras model, and max |prob diff| where one is promised.
THRESHOLDS = {
    "model.tflite": (1.00, 1e-4),
    "model_fp32.tflite": (1.00, 1e-4),
    "model_waveform.tflite": (1.00, 1e-3),  # float32 frontend in TFLite kernels vs TF kernels
    "model_fp16.tflite": (0.99, None),
    "model_dynamic_int8.tflite": (0.97, None),
    "model_int8.tflite": (0.97, None),
}
DEFAULT_THRESHOLD = (0.97, None)
LATENCY_CLIPS = 50


def load_notes(spec: DataSpec, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(waveforms, log-mels, families) of a split, in memory."""
    ds = make_dataset(spec, split).dataset.map(lambda e: (e["audio"], log_mel(e["audio"]), e["family"]),
                                                num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    parts = [tuple(t.numpy() for t in batch) for batch in ds]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def single_clip_latency_ms(clf, x: np.ndarray, n: int = LATENCY_CLIPS) -> float:
    clf.predict(x[:1])  # warm-up (allocation, delegate set-up)
    times = []
    for i in range(min(n, len(x))):
        t = time.perf_counter()
        clf.predict(x[i : i + 1])
        times.append(time.perf_counter() - t)
    return 1000 * float(np.mean(times))


def check_run(run: str, spec: DataSpec, split: str) -> list[dict]:
    keras_path = find_model(run)
    models = sorted(glob.glob(os.path.join(run, "*.tflite")))
    if not models:
        raise RunError(f"{run}: no .tflite models; run python -m nsynth_keras.train or nsynth_keras.export first")
    waves, mels, y = load_notes(spec, split)
    reference = KerasClassifier(keras_path).predict(mels)
    rows = []
    for path in models:
        clf = TFLiteClassifier(path)
        x = waves if clf.takes_waveform else mels
        probs = clf.predict(x)
        name = os.path.basename(path)
        min_agree, max_diff = THRESHOLDS.get(name, DEFAULT_THRESHOLD)
        row = {
            "model": name,
            "input": "waveform [1, 64000]" if clf.takes_waveform else "log-mel [n, 64, 64, 1]",
            "size_kib": round(os.path.getsize(path) / 1024, 1),
            "agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(probs - reference).max()),
            "accuracy": float((probs.argmax(1) == y).mean()),
            "latency_ms": round(single_clip_latency_ms(clf, x), 3),
            "threshold_agreement": min_agree,
            "threshold_max_abs_diff": max_diff,
        }
        row["passed"] = row["agreement"] >= min_agree and (max_diff is None or row["max_abs_diff"] <= max_diff)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'model':<27}{'KiB':>8}{'agree':>8}{'max|dp|':>10}{'acc':>7}{'ms/clip':>9}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        rule = f">={r['threshold_agreement']:.0%}" + (f", <={r['threshold_max_abs_diff']:g}"
                                                      if r["threshold_max_abs_diff"] else "")
        lines.append(f"{r['model']:<27}{r['size_kib']:>8.1f}{r['agreement']:>8.3f}{r['max_abs_diff']:>10.2e}"
                     f"{r['accuracy']:>7.3f}{r['latency_ms']:>9.3f}  {'ok' if r['passed'] else 'FAIL'} ({rule})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nsynth_keras.tflite_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder with model.keras and .tflite files")
    add_data_args(parser, split="test")
    args = parser.parse_args(argv)
    try:
        rows = check_run(args.run, spec_from_args(args), args.split)
    except (RunError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import ai_edge_litert

    print(f"LiteRT interpreter (ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}), "
          f"split {args.split}, agreement with {find_model(args.run)}")
    print(format_table(rows))
    write_json(os.path.join(args.run, f"tflite_check_{args.split}.json"), rows)
    failed = [r["model"] for r in rows if not r["passed"]]
    if failed:
        print(f"below threshold: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
