"""Training speed, Keras vs PyTorch, side by side: the homework CNN (and the wide CNN of the best
accuracy configuration) on the same precomputed log-mels of the real train notes, the same batch,
the same optimizer (Adam 1e-3), the same thread count, float32 and bf16, every cell repeated and
interleaved in one run; median and spread of training examples/s.

    pip install -r requirements-bench.txt     # PyTorch (CPU build), for this benchmark only
    python bench/speed.py                      # writes bench/results/speed.json

Each measurement runs in its own process (TensorFlow reads TF_ENABLE_ONEDNN_OPTS and its thread
pools once, at start-up): one warm-up epoch, then --epochs timed epochs. Absolute figures on shared
machines vary by +-15% run to run, so compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import nsynth_keras  # noqa: E402,F401  before TensorFlow loads: the project's start-up defaults (log level, oneDNN)

MODELS = {"homework": (16, 32, 64, 128), "wide": (32, 64, 128, 256)}
# name -> (framework, precision, model, extra environment[, Keras steps_per_execution; else the project's default])
CELLS = {
    "keras float32": ("keras", "float32", "homework", {}),
    "keras float32 steps1": ("keras", "float32", "homework", {}, 1),
    "keras float32 oneDNN off": ("keras", "float32", "homework", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "keras float32 steps1 oneDNN off": ("keras", "float32", "homework", {"TF_ENABLE_ONEDNN_OPTS": "0"}, 1),
    "keras bf16": ("keras", "bf16", "homework", {}),
    "torch float32": ("torch", "float32", "homework", {}),
    "torch bf16": ("torch", "bf16", "homework", {}),
    "keras float32 wide": ("keras", "float32", "wide", {}),
    "torch float32 wide": ("torch", "float32", "wide", {}),
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")


def cpu_info() -> dict:
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("?", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), **{flag: flag in flags for flag in CPU_FLAGS}}


# --------------------------------------------------------------------------- one measurement (a child process)


def keras_rate(x, y, filters, precision, batch, epochs, threads, steps_per_execution=None) -> float:
    import keras
    import tensorflow as tf

    from nsynth_keras.learn.objective import compile_model
    from nsynth_keras.models.cnn import build_cnn

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    keras.utils.set_random_seed(0)
    model = build_cnn(filters)
    if steps_per_execution is None:  # the project's default, as train uses it
        compile_model(model, 1e-3)
    else:
        compile_model(model, 1e-3, steps_per_execution=steps_per_execution)
    ds = tf.data.Dataset.from_tensor_slices((x, keras.utils.to_categorical(y, 11))).shuffle(len(x), seed=0)
    ds = ds.batch(batch).prefetch(tf.data.AUTOTUNE)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing, allocation
    t = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
    return epochs * len(x) / (time.perf_counter() - t)


def torch_rate(x, y, filters, precision, batch, epochs, threads) -> float:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers, channels = [], 1
    for f in filters:  # the homework CNN: Conv 3x3 same + ReLU + 2x2 max-pool per block, then Dense 11
        layers += [nn.Conv2d(channels, f, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = f
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 4 * 4, 11))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    yt = torch.from_numpy(y.astype(np.int64))

    def epoch():
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(model(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    epoch()  # warm-up
    t = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return epochs * len(x) / (time.perf_counter() - t)


def child(args) -> None:
    data = np.load(args.features)
    framework, precision, model, _, *steps = CELLS[args.child]
    fn = keras_rate if framework == "keras" else torch_rate
    rate = fn(data["x"], data["y"], MODELS[model], precision, args.batch_size, args.epochs, args.threads, *steps)
    print(json.dumps({"cell": args.child, "examples_per_s": rate}))


# --------------------------------------------------------------------------- the driver


def features(args, path: str) -> int:
    from nsynth_keras.cli import spec_from_args
    from nsynth_keras.data.pipeline import load_split

    notes = load_split(spec_from_args(args), "train", ("mel", "family"))
    np.savez(path, x=notes["mel"].astype(np.float32), y=notes["family"].astype(np.int32))
    return len(notes["family"])


# --isa avx2: cap oneDNN (TensorFlow's and PyTorch's) and PyTorch's own kernels at AVX2, whatever the CPU has.
ISA_CAPS = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
PROBE = {  # one small conv with oneDNN's verbose log on: its "isa:" line says which kernels it dispatched to
    "keras": "import nsynth_keras, tensorflow as tf; tf.nn.conv2d(tf.ones([1, 64, 64, 1]), tf.ones([3, 3, 1, 16]), 1, "
             "'SAME')",
    "torch": "import torch; print('aten cpu capability:', torch.backends.cpu.get_cpu_capability()); "
             "torch.nn.functional.conv2d(torch.ones(1, 1, 64, 64), torch.ones(16, 1, 3, 3), padding=1)",
}


def isa_in_use(framework: str, isa: str) -> list[str]:
    """What each framework reports about the ISA it uses under the cap (oneDNN's own verbose log)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", ONEDNN_VERBOSE="1", **ISA_CAPS[isa])
    out = subprocess.run([sys.executable, "-c", PROBE[framework]], env=env, capture_output=True, text=True,
                         timeout=300)
    lines = (out.stdout + out.stderr).splitlines()
    reported = sorted({line.strip() for line in lines if "isa:" in line or "capability" in line})
    # TensorFlow without its oneDNN ops still calls oneDNN's sgemm from Eigen; only its oneDNN ops run "convolution"
    convolution = any(",exec," in line and ",convolution," in line for line in lines)
    if framework == "keras":
        reported.append(f"conv2d in a oneDNN convolution kernel: {'yes' if convolution else 'no'}")
    return reported


def measure(cell: str, path: str, args) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **CELLS[cell][3], **ISA_CAPS[args.isa])
    cmd = [sys.executable, os.path.abspath(__file__), "--child", cell, "--features", path, "--epochs",
           str(args.epochs), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"{cell} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["examples_per_s"]


def main(argv=None) -> dict:
    from nsynth_keras.cli import add_data_args
    from nsynth_keras.core.files import write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every cell (default: 3)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (default: 2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both frameworks (default: all)")
    p.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    p.add_argument("--isa", choices=tuple(ISA_CAPS), default="native",
                   help="avx2: cap both frameworks at AVX2 (oneDNN and ATen), to measure an AVX2-only CPU on a newer "
                        "one; the cap each framework reports is recorded (default: %(default)s)")
    p.add_argument("--json", default=None, help="results file (default: bench/results/speed.json, or "
                                                 "speed_avx2.json with --isa avx2)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--features", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.json = args.json or os.path.join(ROOT, "bench", "results", "speed.json" if args.isa == "native"
                                          else f"speed_{args.isa}.json")
    if args.child:
        child(args)
        return {}
    try:
        import torch  # noqa: F401
    except ImportError:
        cells = [c for c in args.cells if CELLS[c][0] != "torch"]
        print("PyTorch is not installed (pip install -r requirements-bench.txt): Keras cells only")
    else:
        cells = args.cells
    frameworks = sorted({CELLS[c][0] for c in cells})
    isa = {f: isa_in_use(f, args.isa) for f in frameworks}
    for f, lines in isa.items():
        print(f"[speed] {f} with --isa {args.isa}: " + ("; ".join(lines) or "no ISA line reported"), flush=True)
    rates: dict[str, list[float]] = {c: [] for c in cells}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "features.npz")
        n = features(args, path)
        for r in range(args.rounds):
            for cell in cells:
                rates[cell].append(measure(cell, path, args))
                print(f"[speed] round {r + 1}/{args.rounds} {cell:<26} {rates[cell][-1]:8.1f} examples/s", flush=True)
    summary = {c: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} for c, v in rates.items()}
    result = {"cpu": cpu_info(), "isa_cap": args.isa, "isa_reported": isa, "notes": n, "batch_size": args.batch_size,
              "threads": args.threads,
              "epochs_timed": args.epochs, "rounds": args.rounds,
              "examples_per_s": {c: round(s["median"], 1) for c, s in summary.items()}, "cells": summary}
    if "keras float32 steps1" in summary:
        steps = [k / s for s, k in zip(rates["keras float32 steps1"], rates["keras float32"])]
        result["default_steps_over_steps1"] = round(statistics.median(steps), 3)
    if "torch float32" in summary and "keras float32 steps1" in summary:
        ratios = [k / t for k, t in zip(rates["keras float32 steps1"], rates["torch float32"])]
        result["keras_steps1_over_torch_float32"] = round(statistics.median(ratios), 3)
    if "torch float32" in summary:
        ratios = [k / t for k, t in zip(rates["keras float32"], rates["torch float32"])]  # same round, side by side
        result["keras_over_torch_float32"] = round(statistics.median(ratios), 3)
    write_json(args.json, result)
    print(f"\nCPU: {result['cpu']['model']}, {result['cpu']['cores']} cores; flags: "
          + ", ".join(f for f in CPU_FLAGS if result["cpu"][f]))
    print(f"{'cell':<28}{'median':>10}{'min':>10}{'max':>10}  examples/s, {n} notes, batch {args.batch_size}")
    for c, s in summary.items():
        print(f"{c:<28}{s['median']:>10.1f}{s['min']:>10.1f}{s['max']:>10.1f}")
    if "keras_over_torch_float32" in result:
        print("Keras / PyTorch, float32, homework CNN (median of per-round ratios):",
              result["keras_over_torch_float32"])
    return result


if __name__ == "__main__":
    main()
