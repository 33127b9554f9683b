"""Training speed on a GPU: the homework CNN in Keras 3 on JAX, float32 vs mixed_float16 (and mixed_bfloat16),
on the project's own log-mels of the real train notes; every cell repeated and interleaved in one run.

Two steps, since a GPU machine may have JAX but no TensorFlow (the log-mels come from TensorFlow's frontend):

    python bench/gpu.py features --data-dir ../shared/nsynth --out FOLDER   # train/valid log-mels as .npy
    KERAS_BACKEND=jax python bench/gpu.py run --features FOLDER              # writes bench/results/gpu_jax.json

The run step needs only Keras and a backend (no TensorFlow, no audio): the model is the project's
``build_baseline`` compiled by the project's ``compile_model`` (Adam 1e-3, 32 steps per execution). The train
notes are repeated (--repeat) so that a large batch still makes many steps an epoch; one warm-up epoch (XLA
compilation), then --epochs timed epochs; valid accuracy after them shows that each precision still learns.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
BATCHES = (32, 256, 1024)
SPLITS = ("train", "valid")


def write_features(argv: list[str]) -> int:
    """The features step (TensorFlow): FOLDER/{train,valid}_{x,y}.npy, log-mels [n, 64, 64, 1] and family ids."""
    import nsynth_keras  # noqa: F401  before TensorFlow loads
    from nsynth_keras.cli import add_data_args, spec_from_args
    from nsynth_keras.data.pipeline import load_split

    p = argparse.ArgumentParser(prog="gpu.py features", description="write the log-mels the run step reads")
    add_data_args(p)
    p.add_argument("--out", required=True, help="folder for the .npy files")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    spec = spec_from_args(args)
    for split in SPLITS:
        notes = load_split(spec, split, ("mel", "family"))
        np.save(os.path.join(args.out, f"{split}_x.npy"), notes["mel"].astype(np.float32))
        np.save(os.path.join(args.out, f"{split}_y.npy"), notes["family"].astype(np.int32))
        print(f"[gpu] {split}: {len(notes['family'])} log-mels {notes['mel'].shape[1:]} -> {args.out}")
    return 0


def read_features(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return np.load(os.path.join(folder, f"{split}_x.npy")), np.load(os.path.join(folder, f"{split}_y.npy"))
    except FileNotFoundError as e:
        sys.exit(f"{e.filename}: missing; write it first with: python bench/gpu.py features --out {folder} ...")


def measure(keras, data, policy: str, batch: int, epochs: int, steps_per_execution: int | None) -> dict:
    """Examples/s of ``epochs`` timed epochs after a warm-up epoch, final loss and valid accuracy."""
    from nsynth_keras.learn.objective import compile_model
    from nsynth_keras.models.cnn import build_baseline

    x, y, xv, yv = data
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = build_baseline()
        if steps_per_execution is None:  # the project's default, as train uses it
            compile_model(model, 1e-3)
        else:
            compile_model(model, 1e-3, steps_per_execution=steps_per_execution)
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # warm-up: XLA compilation, allocation
        t = time.perf_counter()
        history = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)  # logs are read back: synchronised
        seconds = time.perf_counter() - t
        valid = model.evaluate(xv, yv, batch_size=256, verbose=0, return_dict=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loss = float(history.history["loss"][-1])
    if not np.isfinite(loss):
        raise RuntimeError(f"{policy} batch {batch}: the loss is {loss}")
    return {"examples_per_s": epochs * len(x) / seconds, "loss": loss, "valid_accuracy": float(valid["accuracy"])}


def run(argv: list[str]) -> dict:
    """The run step (Keras on any backend; JAX on the GPU machine)."""
    p = argparse.ArgumentParser(prog="gpu.py run", description="time the homework CNN per precision and batch")
    p.add_argument("--features", required=True, help="folder written by the features step")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every cell (default: 3)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (default: 3)")
    p.add_argument("--repeat", type=int, default=16, help="copies of the train notes in one epoch (default: 16)")
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (to test this script)")
    p.add_argument("--json", default=None, help="results file (default: bench/results/gpu_<backend>.json)")
    args = p.parse_args(argv)
    if "keras" not in sys.modules:  # Keras reads its backend once, when first imported
        os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from nsynth_keras.core.config import NUM_CLASSES
    from nsynth_keras.core.files import write_json

    backend = keras.backend.backend()
    device = accelerator(backend)
    if device is None and not args.allow_cpu:
        sys.exit(f"no GPU visible to Keras' {backend} backend (--allow-cpu runs anyway)")
    args.json = args.json or os.path.join(ROOT, "bench", "results", f"gpu_{backend}.json")
    x, y = read_features(args.features, "train")
    xv, yv = read_features(args.features, "valid")
    data = (np.tile(x, (args.repeat, 1, 1, 1)), keras.utils.to_categorical(np.tile(y, args.repeat), NUM_CLASSES),
            xv, keras.utils.to_categorical(yv, NUM_CLASSES))
    # (policy, batch, steps per execution; None: the project's default)
    cells = [(pol, b, None) for b in args.batches for pol in args.policies]
    if args.batches[0] == 32:
        cells.insert(1, ("float32", 32, 1))
    name = {c: f"{c[0]} batch {c[1]}" + ("" if c[2] is None else f" steps {c[2]}") for c in cells}
    runs: dict[str, list[dict]] = {name[c]: [] for c in cells}
    result = {"backend": backend, "keras": keras.__version__, "device": device or "cpu",
              "host": platform.node(), "train_notes": len(x), "examples_per_epoch": len(data[0]),
              "valid_notes": len(xv), "epochs_timed": args.epochs, "rounds": args.rounds, **versions(backend)}
    for r in range(args.rounds):
        for c in cells:
            m = measure(keras, data, c[0], c[1], args.epochs, c[2])
            runs[name[c]].append(m)
            print(f"[gpu] round {r + 1}/{args.rounds} {name[c]:<30} {m['examples_per_s']:10.0f} examples/s  "
                  f"loss {m['loss']:.3f}  valid accuracy {m['valid_accuracy']:.3f}", flush=True)
            write_json(args.json, summarise(result, runs))  # partial results survive a time limit
    result = summarise(result, runs)
    write_json(args.json, result)
    print(f"\n{device or 'cpu'}, Keras {keras.__version__} on {backend}; {len(data[0])} examples an epoch")
    print(f"{'cell':<32}{'median':>10}{'min':>10}{'max':>10}  examples/s   valid accuracy (median)")
    for cell, s in result["cells"].items():
        print(f"{cell:<32}{s['median']:>10.0f}{s['min']:>10.0f}{s['max']:>10.0f}   {s['valid_accuracy']:.3f}")
    for key, value in result.items():
        if key.endswith("_over_float32"):
            print(f"{key}: {value}")
    return result


def summarise(result: dict, runs: dict[str, list[dict]]) -> dict:
    """Median, min, max per cell; each precision over float32 at the same batch (median of per-round ratios)."""
    cells = {}
    for cell, ms in runs.items():
        if ms:
            rates = [m["examples_per_s"] for m in ms]
            cells[cell] = {"median": round(statistics.median(rates), 1), "min": round(min(rates), 1),
                           "max": round(max(rates), 1), "valid_accuracy": round(statistics.median(
                               m["valid_accuracy"] for m in ms), 3), "runs": ms}
    ratios = {}
    for cell, ms in runs.items():
        policy, _, batch = cell.partition(" batch ")
        base = runs.get(f"float32 batch {batch}", [])
        if policy != "float32" and " steps " not in cell and ms and base:
            pairs = zip((m["examples_per_s"] for m in ms), (m["examples_per_s"] for m in base))
            ratios[f"{policy}_batch{batch}_over_float32"] = round(statistics.median(a / b for a, b in pairs), 3)
    return {**result, "examples_per_s": {c: s["median"] for c, s in cells.items()}, "cells": cells, **ratios}


def accelerator(backend: str) -> str | None:
    """The GPU's name, or None where the backend sees none."""
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return gpus[0].device_kind if gpus else None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None
    return None


def versions(backend: str) -> dict:
    if backend != "jax":
        return {}
    import jax

    return {"jax": jax.__version__, "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    steps = {"features": write_features, "run": run}
    if not argv or argv[0] not in steps:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return steps[argv[0]](argv[1:])


if __name__ == "__main__":
    result = main()
    sys.exit(result if isinstance(result, int) else 0)
