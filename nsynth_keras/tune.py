"""keras-tuner search over the CNN: kernel count, kernel size, padding, stride, blocks,
Dropout, dense width and learning rate, on the same build_cnn the train command uses.

    python -m nsynth_keras.tune --data-dir ../shared/nsynth --max-trials 20 --project saved_models/tuning/demo
    python -m nsynth_keras.tune --project saved_models/tuning/demo --summary
    python -m nsynth_keras.tune --project saved_models/tuning/demo --export-best

Rerunning the same search command continues an interrupted search (--overwrite starts over).

Distributed (keras-tuner chief/worker): start the chief, then N workers, each with the same
command and the chief's address:
    KERASTUNER_TUNER_ID=chief  KERASTUNER_ORACLE_IP=<ip> KERASTUNER_ORACLE_PORT=8000 python -m nsynth_keras.tune ...
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=<ip> KERASTUNER_ORACLE_PORT=8000 python -m nsynth_keras.tune ...
The chief only hands out trials; the workers train. --project must be a folder every worker can write.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import keras
import keras_tuner as kt

from nsynth_keras.config import DEFAULT_RUNS_DIR
from nsynth_keras.data import DataError, add_data_args, spec_from_args
from nsynth_keras.model import build_cnn, feature_map_sizes

SPACE = {
    "base_filters": [8, 16, 32],  # doubled each block, at most 128
    "blocks": (2, 4),
    "kernel_size": [3, 5],
    "padding": ["same", "valid"],
    "strides": [1, 2],
    "dropout": (0.0, 0.5, 0.1),
    "dense_units": [0, 64, 128],
    "learning_rate": (1e-4, 3e-3),
}


def cnn_kwargs(values: dict) -> dict:
    """build_cnn arguments from a trial's hyperparameter values."""
    base, blocks = int(values["base_filters"]), int(values["blocks"])
    return {
        "filters": tuple(min(base * 2**i, 128) for i in range(blocks)),
        "kernel_size": int(values["kernel_size"]),
        "padding": values["padding"],
        "strides": int(values["strides"]),
        "dropout": float(values["dropout"]),
        "dense_units": int(values["dense_units"]),
    }


class CNNHyperModel(kt.HyperModel):
    """The search space over build_cnn. Combinations whose feature map would shrink to
    nothing fail at build with FailedTrialError: keras-tuner records them as FAILED trials
    (no training), and --summary counts them with the reason."""

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        # Defaults are the homework network, so the first (default) configuration is valid.
        values = {
            "base_filters": hp.Choice("base_filters", SPACE["base_filters"], default=16),
            "blocks": hp.Int("blocks", *SPACE["blocks"], default=4),
            "kernel_size": hp.Choice("kernel_size", SPACE["kernel_size"], default=3),
            "padding": hp.Choice("padding", SPACE["padding"], default="same"),
            "strides": hp.Choice("strides", SPACE["strides"], default=1),
            "dropout": hp.Float("dropout", *SPACE["dropout"], default=0.0),
            "dense_units": hp.Choice("dense_units", SPACE["dense_units"], default=0),
        }
        lr = hp.Float("learning_rate", *SPACE["learning_rate"], sampling="log", default=1e-3)
        kwargs = cnn_kwargs(values)
        try:
            feature_map_sizes(kwargs["filters"], kwargs["kernel_size"], kwargs["padding"], kwargs["strides"])
        except ValueError as err:
            raise kt.errors.FailedTrialError(f"skipped: {err}") from None
        from nsynth_keras.train import compile_model

        model = build_cnn(**kwargs)
        compile_model(model, lr)
        return model

    def fit(self, hp, model, *args, **kwargs):
        t = time.time()
        history = model.fit(*args, **kwargs)
        return {"val_accuracy": max(history.history["val_accuracy"]), "train_seconds": time.time() - t}


def make_tuner(algorithm: str, project: str, max_trials: int, max_epochs: int, overwrite: bool, seed: int):
    common = dict(objective=kt.Objective("val_accuracy", "max"), directory=os.path.dirname(project) or ".",
                  project_name=os.path.basename(project), overwrite=overwrite, seed=seed,
                  max_consecutive_failed_trials=max_trials + 10)  # pruned configurations are not errors
    hypermodel = CNNHyperModel()
    if algorithm == "hyperband":
        return kt.Hyperband(hypermodel, max_epochs=max_epochs, factor=3, **common)
    if algorithm == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    return kt.RandomSearch(hypermodel, max_trials=max_trials, **common)


def search(args: argparse.Namespace) -> int:
    from nsynth_keras.pipeline import split_features
    from nsynth_keras.train import one_hot

    keras.utils.set_random_seed(args.seed)
    exists = os.path.isfile(os.path.join(args.project, "oracle.json"))
    if exists and not args.overwrite:
        print(f"Resuming the search in {args.project} (--overwrite starts over)")
    spec = spec_from_args(args)
    # Built once; features cached in memory, so trials never recompute log-mels.
    train_ds, _ = split_features(spec, "train", args.batch_size, training=True, seed=args.seed)
    valid_ds, _ = split_features(spec, "valid", args.batch_size)
    tuner = make_tuner(args.algorithm, args.project, args.max_trials, args.epochs, args.overwrite, args.seed)
    tuner.search(train_ds.map(one_hot), validation_data=valid_ds.map(one_hot), epochs=args.epochs,
                 callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=args.patience)],
                 verbose=2 if os.environ.get("CI") else 1)
    if os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief":
        print_summary(args.project)
    return 0


def load_trials(project: str) -> list[dict]:
    """Every trial of a project: id, status, hyperparameters, val_accuracy, time, params, reason."""
    import json

    if not os.path.isdir(project):
        raise DataError(f"{project}: no tuning project there; run a search first")
    trials = []
    for name in sorted(os.listdir(project)):
        path = os.path.join(project, name, "trial.json")
        if not name.startswith("trial_") or not os.path.isfile(path):
            continue
        with open(path) as f:
            t = json.load(f)
        values = t["hyperparameters"]["values"]
        metrics = t.get("metrics", {}).get("metrics", {})

        def best(metric, metrics=metrics):
            obs = metrics.get(metric, {}).get("observations", [])
            return max((o["value"][0] for o in obs), default=None)

        row = {"trial": t["trial_id"], "status": t["status"], **values,
               "val_accuracy": best("val_accuracy"), "seconds": best("train_seconds"),
               "reason": (t.get("message") or "").strip().splitlines()[-1] if t.get("message") else ""}
        try:
            row["params"] = build_cnn(**cnn_kwargs(values)).count_params()
        except (ValueError, KeyError):
            row["params"] = None
        trials.append(row)
    if not trials:
        raise DataError(f"{project}: no trials yet")
    return trials


def print_summary(project: str) -> list[dict]:
    from nsynth_keras.visualize import plot_tuning

    trials = load_trials(project)
    done = sorted((t for t in trials if t["val_accuracy"] is not None), key=lambda t: -t["val_accuracy"])
    failed = [t for t in trials if t["status"] == "FAILED"]
    cols = ["trial", "base_filters", "blocks", "kernel_size", "padding", "strides", "dropout", "dense_units",
            "learning_rate", "params", "val_accuracy", "seconds"]
    print(f"{'trial':<6}{'filt':>5}{'blk':>4}{'k':>3}{'pad':>6}{'str':>4}{'drop':>6}{'dense':>6}{'lr':>9}"
          f"{'params':>9}{'val_acc':>9}{'sec':>7}")
    for t in done:
        print(f"{t['trial']:<6}{t['base_filters']:>5}{t['blocks']:>4}{t['kernel_size']:>3}{t['padding']:>6}"
              f"{t['strides']:>4}{t['dropout']:>6.1f}{t['dense_units']:>6}{t['learning_rate']:>9.1e}"
              f"{t['params'] or 0:>9}{t['val_accuracy']:>9.3f}{t['seconds'] or 0:>7.1f}")
    print(f"{len(done)} trials completed, {len(failed)} skipped (FAILED: feature map shrinks to nothing"
          f"{'' if not failed else ', e.g. ' + failed[0]['reason'][:160]})")
    from nsynth_keras.runs import atomic_path

    with atomic_path(os.path.join(project, "summary.csv")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols + ["status", "reason"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(trials)
    if done:
        plot_tuning(done, os.path.join(project, "summary.png"))
    print(f"Wrote {os.path.join(project, 'summary.csv')} and summary.png")
    return trials


def export_best(args: argparse.Namespace) -> int:
    """Retrain the best configuration on train and write a run folder exactly as train does."""
    from nsynth_keras import train

    trials = [t for t in load_trials(args.project) if t["val_accuracy"] is not None]
    best = max(trials, key=lambda t: t["val_accuracy"])
    kw = cnn_kwargs(best)
    print(f"Best trial {best['trial']}: {kw}, learning rate {best['learning_rate']:.2e}, "
          f"val_accuracy {best['val_accuracy']:.3f}")
    argv = ["--model", "cnn", "--filters", *map(str, kw["filters"]), "--kernel-size", str(kw["kernel_size"]),
            "--padding", kw["padding"], "--strides", str(kw["strides"]), "--dropout", str(kw["dropout"]),
            "--dense-units", str(kw["dense_units"]), "--learning-rate", str(best["learning_rate"]),
            "--epochs", str(args.epochs), "--early-stopping", str(args.patience), "--seed", str(args.seed),
            "--source", args.source, "--data-dir", args.data_dir, "--tfds-config", args.tfds_config,
            "--out", args.out, "--run-name", args.run_name or f"tuned-{os.path.basename(args.project)}"]
    if args.max_examples:
        argv += ["--max-examples", str(args.max_examples)]
    if args.overwrite:
        argv.append("--overwrite")
    return train.main(argv)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nsynth_keras.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=os.path.join(DEFAULT_RUNS_DIR, "tuning", "default"),
                   help="tuning project folder (default: %(default)s)")
    p.add_argument("--summary", action="store_true", help="print the trial table, write summary.csv/png")
    p.add_argument("--export-best", action="store_true", help="retrain the best configuration and export it")
    p.add_argument("--algorithm", choices=("hyperband", "bayesian", "random"), default="hyperband")
    p.add_argument("--max-trials", type=int, default=20, help="trials for bayesian/random (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=12, help="max epochs per trial (default: %(default)s)")
    p.add_argument("--patience", type=int, default=3, help="EarlyStopping patience inside trials")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="start the search over (or replace the export)")
    p.add_argument("--out", default=DEFAULT_RUNS_DIR, help="run folder parent for --export-best")
    p.add_argument("--run-name", default=None, help="run folder name for --export-best")
    add_data_args(p)
    args = p.parse_args(argv)
    try:
        if args.summary:
            print_summary(args.project)
            return 0
        if args.export_best:
            return export_best(args)
        return search(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
