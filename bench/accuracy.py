"""Accuracy benchmark on instruments the model has never heard: the homework baseline, the best
real-only configuration, and configurations that add notes rendered from SoundFonts; 3 seeds each,
the best-on-valid checkpoint scored on valid and test (unseen instruments) with the evaluate code.

    python bench/accuracy.py                                      # every configuration, seeds 0 1 2
    python bench/accuracy.py --only wide+augment+3sf --seeds 0 --keep /tmp/runs   # reproduce one row
    python bench/accuracy.py --quick                              # smoke run: 1 seed, 1 epoch, few notes

Rendered notes are data: they go to --render-cache (default ~/.cache/nsynth-keras/rendered), outside
the repository, rendered once and reused. Configurations that need a SoundFont that is not
installed (the Debian packages fluid-soundfont-gm and musescore-general-soundfont) are skipped with
the reason. Results accumulate in bench/results/accuracy.json (a run of --only replaces that
configuration's rows) and bench/results/accuracy.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from datetime import date

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nsynth_keras.cli import add_data_args, spec_from_args  # noqa: E402
from nsynth_keras.config import FAMILIES, SOURCES  # noqa: E402
from nsynth_keras.data import DataSpec  # noqa: E402
from nsynth_keras.evaluation import evaluate  # noqa: E402
from nsynth_keras.rendering import RenderConfig, default_soundfont, render  # noqa: E402
from nsynth_keras.runs import read_json, write_json  # noqa: E402
from nsynth_keras.training import TrainConfig, train  # noqa: E402

AUGMENT = ("specaugment", "gain", "shift", "mel_roll", "mixup")
WIDE = {"model": "cnn", "filters": (32, 64, 128, 256), "dropout": 0.3}
# SoundFonts to render: name -> path (None: the default, TimGM6mb from pretty-midi). Every one is
# rendered the same way: every 4th pitch of each instrument's range at velocities 75 and 127.
SOUNDFONTS = {
    "timgm6mb": None,
    "fluidr3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "musescore": "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "csound": "/usr/share/sounds/sf2/sf_GMbank.sf2",  # Debian csound-soundfont
    "opl3": "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",  # Debian opl3-soundfont: FM synthesis, all synthetic
}
SF3 = ("timgm6mb", "fluidr3", "musescore")
SF5 = (*SF3, "csound", "opl3")
RENDER = {"pitch_step": 4, "velocities": (75, 127)}
# name -> (TrainConfig fields, rendered sets mixed in, extra DataSpec fields)
CONFIGS = {
    "baseline": ({}, (), {}),
    # The best real-only configuration of the earlier bench (32-64-128-256, Dropout 0.3, every augmentation).
    "wide+augment": ({**WIDE, "augment": AUGMENT}, (), {}),
    "baseline+timgm6mb": ({}, ("timgm6mb",), {}),
    "wide+augment+timgm6mb": ({**WIDE, "augment": AUGMENT}, ("timgm6mb",), {}),
    "wide+augment+3sf": ({**WIDE, "augment": AUGMENT}, SF3, {}),
    "wide+augment+3sf-pretrain": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10}, SF3, {}),
    "wide+augment+5sf": ({**WIDE, "augment": AUGMENT}, SF5, {}),
    "wide+augment+5sf-pretrain": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10}, SF5, {}),
    "wide+augment+5sf-balanced": ({**WIDE, "augment": AUGMENT}, SF5, {"extra_balance": True}),
}


def rendered_folder(name: str, cache: str, log=print) -> str:
    """Render a SoundFont once into the cache (a rerun with the same settings resumes or reuses it)."""
    path = SOUNDFONTS[name] or default_soundfont()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is not installed (apt-get install fluid-soundfont-gm "
                                "musescore-general-soundfont csound-soundfont opl3-soundfont)")
    folder = os.path.join(cache, name)
    if not os.path.isfile(os.path.join(folder, "nsynth-train", "examples.json")):
        summary = render(RenderConfig(folder, (path,), **RENDER), log=log)
        log(summary.table())
    return folder


def run_one(name: str, seed: int, args, out: str) -> dict:
    fields, sets, data_fields = CONFIGS[name]
    extra = tuple(rendered_folder(s, args.render_cache) for s in sets)
    spec = dataclasses.replace(spec_from_args(args), extra_train=extra, **data_fields)
    config = TrainConfig(**fields, epochs=args.epochs, early_stopping=args.patience, seed=seed,
                         mixed_precision=args.precision, out=out, run_name=f"{name.replace('+', '_')}-seed{seed}",
                         tflite=False, overwrite=True)
    t = time.time()
    run = train(config, spec)
    result = {"seed": seed, "seconds": round(time.time() - t, 1),
              "epochs_run": len(read_json(os.path.join(run, "history.json")).get("epoch", [])),
              "train_notes": read_json(os.path.join(run, "config.json"))["train_notes_by_folder"]}
    scoring = DataSpec(spec.source, spec.data_dir, spec.tfds_config, spec.filters, spec.strict)
    for split in ("valid", "test"):
        r, _ = evaluate(run, scoring, split)
        result[split] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                         "by_source": {k: v["accuracy"] for k, v in r.get("by_source", {}).items()},
                         "families": {f: {"accuracy": m["accuracy"], "f1": m["f1"]}
                                      for f, m in r["families"].items() if m["support"]}}
    return result, ["python", "-m", "nsynth_keras.train", *config.to_argv(),
                    "--data-dir", args.data_dir, *(["--extra-train", *extra] if extra else [])]


def mean_std(values) -> dict:
    values = np.asarray(list(values), float)
    return {"mean": float(values.mean()), "std": float(values.std())}


def summarise(runs: list[dict]) -> dict:
    row = {f"{split}_{m}": mean_std(r[split][m] for r in runs)
           for split in ("valid", "test") for m in ("accuracy", "macro_f1")}
    row["test_by_source"] = {s: mean_std(r["test"]["by_source"][s] for r in runs)
                             for s in SOURCES if all(s in r["test"]["by_source"] for r in runs)}
    row["test_families"] = {f: {k: mean_std(r["test"]["families"][f][k] for r in runs) for k in ("accuracy", "f1")}
                            for f in FAMILIES if all(f in r["test"]["families"] for r in runs)}
    row["seeds"] = [r["seed"] for r in runs]
    return row


def markdown(results: dict) -> str:
    lines = [f"Updated {date.today()}; {os.cpu_count()} CPU cores. Test: 260 notes of 51 instruments never heard in "
             "training. Mean ± std over the seeds listed.", "",
             "| configuration | seeds | valid acc | test acc | test macro-F1 | test acoustic | test electronic | "
             "test synthetic | min/run |", "|---|---|---|---|---|---|---|---|---|"]
    fmt = "{mean:.3f} ± {std:.3f}".format
    for name, entry in results.items():
        s = entry["summary"]
        by = s["test_by_source"]
        minutes = np.mean([r["seconds"] for r in entry["runs"]]) / 60
        lines.append(f"| {name} | {len(s['seeds'])} | {fmt(**s['valid_accuracy'])} | {fmt(**s['test_accuracy'])} | "
                     f"{fmt(**s['test_macro_f1'])} | " + " | ".join(fmt(**by[k]) if k in by else "-" for k in SOURCES)
                     + f" | {minutes:.1f} |")
    best = max(results, key=lambda k: results[k]["summary"]["test_accuracy"]["mean"])
    lines += ["", f"Per family on test, best configuration ({best}):", "",
              "| family | accuracy | F1 |", "|---|---|---|"]
    for family, m in results[best]["summary"]["test_families"].items():
        lines.append(f"| {family} | {fmt(**m['accuracy'])} | {fmt(**m['f1'])} |")
    lines += ["", f"Reproduce one row: `python bench/accuracy.py --only {best} --seeds 0 --keep DIR`; "
              "the full train command of each configuration is in accuracy.json (`argv`)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), default=None, help="configurations to run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30, help="at most this many epochs (default: %(default)s)")
    p.add_argument("--patience", type=int, default=8, help="early stopping on val_accuracy (default: %(default)s)")
    p.add_argument("--precision", default="bf16", choices=("auto", "off", "on", "bf16"),
                   help="training precision (default: bf16, 1.9x faster than float32 on this AVX512-BF16 CPU)")
    p.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--render-cache", default=os.path.expanduser("~/.cache/nsynth-keras/rendered"),
                   help="rendered notes, outside the repository (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 40 notes per split, two configurations")
    p.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--report", action="store_true", help="only rewrite accuracy.md from accuracy.json")
    args = p.parse_args(argv)
    names = args.only or list(CONFIGS)
    if args.quick:
        args.epochs, args.seeds, args.max_examples = 1, [0], 40
        names = args.only or ["baseline", "baseline+timgm6mb"]
    suffix = "_quick" if args.quick else ""
    json_path = os.path.join(args.results, f"accuracy{suffix}.json")
    results = read_json(json_path)["configs"] if os.path.isfile(json_path) else {}
    if args.report:
        names = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or tmp
        for name in names:
            runs = []
            try:
                for seed in args.seeds:
                    r, train_argv = run_one(name, seed, args, out)
                    print(f"[accuracy] {name} seed {seed}: test acc {r['test']['accuracy']:.3f} macro-F1 "
                          f"{r['test']['macro_f1']:.3f} ({r['seconds']} s, {r['epochs_run']} epochs)", flush=True)
                    runs.append(r)
            except FileNotFoundError as err:
                print(f"[accuracy] {name}: skipped: {err}", flush=True)
                continue
            # Read again before writing: another invocation may have added configurations meanwhile.
            results = read_json(json_path)["configs"] if os.path.isfile(json_path) else {}
            results[name] = {"argv": train_argv, "runs": runs, "summary": summarise(runs)}
            os.makedirs(args.results, exist_ok=True)
            write_json(json_path, {"epochs": args.epochs, "patience": args.patience, "precision": args.precision,
                                   "render": {**RENDER, "velocities": list(RENDER["velocities"])},
                                   "configs": results})
    md = markdown(results) if results else "no configuration ran\n"
    with open(os.path.join(args.results, f"accuracy{suffix}.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
