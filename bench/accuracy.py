"""Accuracy benchmark: the homework baseline vs baseline + augmentation vs the best configuration,
each trained with 3 seeds on the real subset and scored on valid and test (unseen instruments)
with the evaluate code.

    python bench/accuracy.py --data-dir ../shared/nsynth            # about 17 min on 2 CPU cores
    python bench/accuracy.py --data-dir ../shared/nsynth --quick    # smoke run: 1 seed, 1 epoch, few notes

Writes bench/results/accuracy.json and bench/results/accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nsynth_keras import train  # noqa: E402
from nsynth_keras.data import DataSpec, Filters  # noqa: E402
from nsynth_keras.evaluate import evaluate  # noqa: E402
from nsynth_keras.runs import write_json  # noqa: E402

AUGMENT = ["--augment", "specaugment", "gain", "shift", "mel_roll", "mixup"]
CONFIGS = {
    "baseline": ["--model", "baseline"],
    "baseline+augment": ["--model", "baseline", *AUGMENT],
    # The best configuration of the hyperband search (python -m nsynth_keras.tune, 26 trials,
    # best val_accuracy 0.68): 3 blocks of 32-64-128 kernels, 5x5, 'same', stride 2, lr 1.6e-3.
    "tuned": ["--model", "cnn", "--filters", "32", "64", "128", "--kernel-size", "5", "--padding", "same",
              "--strides", "2", "--learning-rate", "0.0016"],
    # Best on valid of 7 hand-tried variants (seed 0): the homework CNN with twice the kernels,
    # Dropout 0.3 after each block and every augmentation.
    "wide+augment": ["--model", "cnn", "--filters", "32", "64", "128", "256", "--dropout", "0.3", *AUGMENT],
}


def run(name: str, flags: list[str], seed: int, args, out: str) -> dict:
    run_name = f"{name.replace('+', '_')}-seed{seed}"
    argv = [*flags, "--data-dir", args.data_dir, "--epochs", str(args.epochs), "--seed", str(seed),
            "--out", out, "--run-name", run_name, "--no-tflite"]
    if args.max_examples:
        argv += ["--max-examples", str(args.max_examples)]
    t = time.time()
    assert train.main(argv) == 0, f"training {run_name} failed"
    spec = DataSpec(data_dir=args.data_dir, filters=Filters(max_examples=args.max_examples))
    result = {"seconds": round(time.time() - t, 1)}
    for split in ("valid", "test"):
        r, _ = evaluate(os.path.join(out, run_name), spec, split)
        result[split] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
    return result


def summarise(results: dict) -> dict:
    table = {}
    for name, runs in results.items():
        row = {}
        for split in ("valid", "test"):
            for metric in ("accuracy", "macro_f1"):
                values = np.array([r[split][metric] for r in runs])
                row[f"{split}_{metric}"] = {"mean": float(values.mean()), "std": float(values.std())}
        table[name] = row
    return table


def markdown(table: dict, args, seeds) -> str:
    lines = [f"Measured {date.today()} on {os.cpu_count()} CPU cores, {args.epochs} epochs, seeds {seeds}, "
             f"data {args.data_dir}" + (f" (max {args.max_examples} notes/split)" if args.max_examples else ""),
             "", "| configuration | valid acc | valid macro-F1 | test acc | test macro-F1 |", "|---|---|---|---|---|"]
    for name, row in table.items():
        cells = [f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}"
                 for k in ("valid_accuracy", "valid_macro_f1", "test_accuracy", "test_macro_f1")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    base, best = table["baseline"]["test_accuracy"]["mean"], max(r["test_accuracy"]["mean"] for r in table.values())
    lines += ["", f"Best mean test accuracy {best:.3f} vs baseline {base:.3f}: {100 * (best - base):+.1f} points "
              f"(target: +10)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/nsynth")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--max-examples", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 40 notes per split")
    p.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.max_examples = 1, [0], 40
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for name in args.configs:
            results[name] = []
            for seed in args.seeds:
                r = run(name, CONFIGS[name], seed, args, out)
                print(f"[accuracy] {name} seed {seed}: test acc {r['test']['accuracy']:.3f} "
                      f"macro-F1 {r['test']['macro_f1']:.3f} ({r['seconds']} s)", flush=True)
                results[name].append(r)
    table = summarise(results)
    os.makedirs(args.results, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    write_json(os.path.join(args.results, f"accuracy{suffix}.json"),
               {"configs": {k: CONFIGS[k] for k in results}, "epochs": args.epochs, "seeds": args.seeds,
                "runs": results, "summary": table})
    md = markdown(table, args, args.seeds) if "baseline" in table else json.dumps(table, indent=2)
    with open(os.path.join(args.results, f"accuracy{suffix}.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
