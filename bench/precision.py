"""Training speed by precision policy, side by side in one run on the same cached real features.

    python bench/precision.py --data-dir ../shared/nsynth [--epochs 3]

float32, mixed_bfloat16 and mixed_float16, the baseline CNN, batch 32; the first epoch (tracing)
is excluded. On a CPU, mixed_float16 is slow (no float16 matmul units); bf16 helps where the CPU has
AVX512-BF16 or AMX.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nsynth_keras  # noqa: E402,F401  before TensorFlow loads: the project's start-up defaults (log level, oneDNN)

# isort: split
import keras  # noqa: E402

from nsynth_keras.cli import add_data_args, spec_from_args  # noqa: E402
from nsynth_keras.core.files import write_json  # noqa: E402
from nsynth_keras.data.pipeline import split_features  # noqa: E402
from nsynth_keras.learn.training import compile_model, one_hot  # noqa: E402
from nsynth_keras.models.cnn import build_baseline  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per policy, after one warm-up epoch")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    ds, data = split_features(spec_from_args(args), "train", 32, training=True)
    ds = ds.map(one_hot)
    for _ in ds:  # fill the feature cache before any timing
        pass
    rates = {}
    try:
        for policy in POLICIES:
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            model = build_baseline()
            compile_model(model, 1e-3)
            model.fit(ds, epochs=1, verbose=0, shuffle=False)
            t = time.perf_counter()
            history = model.fit(ds, epochs=args.epochs, verbose=0, shuffle=False)
            rates[policy] = args.epochs * data.num_examples / (time.perf_counter() - t)
            assert np.isfinite(history.history["loss"]).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    result = {"notes": data.num_examples, "cpu_count": os.cpu_count(),
              "examples_per_s": {k: round(v, 1) for k, v in rates.items()},
              "speed_vs_float32": {k: round(v / rates["float32"], 3) for k, v in rates.items()}}
    print(f"{'policy':<16}{'examples/s':>12}{'vs float32':>12}")
    for k in POLICIES:
        print(f"{k:<16}{rates[k]:>12.1f}{rates[k] / rates['float32']:>12.2f}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
