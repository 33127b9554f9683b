"""keras-tuner search over build_cnn (kernel count, kernel size, padding, stride, blocks, Dropout,
dense width, learning rate); the trial table; retraining the best configuration as a run."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass

import keras
import keras_tuner as kt

from nsynth_keras.core.config import DEFAULT_RUNS_DIR
from nsynth_keras.core.errors import DataError, SettingsError
from nsynth_keras.core.files import atomic_path, pid_lock, read_json, remove, write_json
from nsynth_keras.core.settings import check_fields, setting
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.pipeline import split_features
from nsynth_keras.learn.training import TrainConfig, compile_model, one_hot
from nsynth_keras.models.cnn import build_cnn, feature_map_sizes
from nsynth_keras.reports.plots import plot_tuning

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
ALGORITHMS = ("hyperband", "bayesian", "random")
SEARCH_RECORD = "search.json"  # the data and settings a project was searched with
SUMMARY_CSV, SUMMARY_PNG = "summary.csv", "summary.png"


@dataclass
class SearchConfig:
    """A keras-tuner search's settings; each field is also the tune command's flag."""

    project: str = setting(os.path.join(DEFAULT_RUNS_DIR, "tuning", "default"), "tuning project folder")
    algorithm: str = setting("hyperband", "search algorithm", choices=ALGORITHMS)
    max_trials: int = setting(20, "trials for bayesian/random", at_least=1)
    epochs: int = setting(12, "max epochs per trial (and of the --export-best retraining)", at_least=1)
    patience: int = setting(3, "EarlyStopping patience inside trials (and of the --export-best retraining)",
                            at_least=0)
    batch_size: int = setting(32, "batch size", at_least=1, below=2**31)
    seed: int = setting(0, "seed", at_least=0, below=2**32)
    overwrite: bool = setting(False, "start the search over (with --export-best: replace the exported run)")
    # The settings a search hands to its --export-best retraining (as TrainConfig fields in best_train_config).
    RETRAINING = ("epochs", "patience", "batch_size", "seed")

    def validate(self) -> None:
        check_fields(self)  # types, bounds and choices as declared above
        if self.algorithm == "hyperband" and self.epochs < 2:
            raise SettingsError("--epochs must be at least 2 for hyperband (it trains brackets of fewer epochs)")


def trial_kwargs(values: dict) -> dict:
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
    (no training), and the summary counts them with the reason."""

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
        kwargs = trial_kwargs(values)
        try:
            feature_map_sizes(kwargs["filters"], kwargs["kernel_size"], kwargs["padding"], kwargs["strides"])
        except ValueError as err:
            raise kt.errors.FailedTrialError(f"skipped: {err}") from None
        model = build_cnn(**kwargs)
        compile_model(model, lr)
        return model

    def fit(self, hp, model, *args, **kwargs):
        t = time.time()
        history = model.fit(*args, **kwargs)
        return {"val_accuracy": max(history.history["val_accuracy"]), "train_seconds": time.time() - t}


def make_tuner(config: SearchConfig) -> kt.Tuner:
    project = config.project
    common = dict(objective=kt.Objective("val_accuracy", "max"), directory=os.path.dirname(project) or ".",
                  project_name=os.path.basename(project), overwrite=False, seed=config.seed,
                  max_consecutive_failed_trials=config.max_trials + 10)  # pruned configurations are not errors
    hypermodel = CNNHyperModel()
    if config.algorithm == "hyperband":
        return kt.Hyperband(hypermodel, max_epochs=config.epochs, factor=3, **common)
    if config.algorithm == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=config.max_trials, **common)
    return kt.RandomSearch(hypermodel, max_trials=config.max_trials, **common)


def tuner_id() -> str:
    return os.environ.get("KERASTUNER_TUNER_ID", "chief")


def project_lock(project: str):
    """One process per project and tuner id; a lock left by a dead process is taken over."""
    return pid_lock(os.path.join(project, lock_name()), f"another tune process on {project} (tuner id {tuner_id()})")


def lock_name() -> str:
    return f".lock-{tuner_id()}"


def clear_project(project: str) -> None:
    """Everything in a tuning project but the lock files (other tuner ids' locks stay too)."""
    for name in os.listdir(project):
        if not name.startswith(".lock-"):
            remove(os.path.join(project, name))


def is_project(project: str) -> bool:
    return os.path.isfile(os.path.join(project, "oracle.json")) or os.path.isfile(os.path.join(project, SEARCH_RECORD))


def search(config: SearchConfig, spec: DataSpec, log=print, verbose: int | None = None) -> None:
    """Run (or continue) a search; record the data and settings in the project for export_best.
    verbose: keras-tuner's (0 silent, 1 progress bars, 2 a line per epoch; default 2 under CI, else 1)."""
    config.validate()
    project = config.project
    others = [n for n in os.listdir(project) if not n.startswith(".lock-")] if os.path.isdir(project) else []
    if others and not is_project(project) and tuner_id() == "chief":
        raise DataError(f"--project {project} is a folder with other files in it, not a tuning project: "
                        "choose another --project")
    os.makedirs(project, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    # The lock comes first: --overwrite deletes only what a search it holds the lock for wrote.
    with project_lock(project):
        record = search_record(config, spec)
        if is_project(project):
            if config.overwrite and tuner_id() == "chief":
                clear_project(project)  # a tuning project this command wrote: start over
            elif not config.overwrite:
                check_same_search(project, record)
                log(f"Resuming the search in {project} (--overwrite starts over)")
        if tuner_id() == "chief":  # written only once the checks passed: the record is never lost
            write_json(os.path.join(project, SEARCH_RECORD), record)
        # Built once; features cached in memory, so trials never recompute log-mels.
        train_ds, _ = split_features(spec, "train", config.batch_size, training=True, seed=config.seed)
        valid_ds, _ = split_features(spec, "valid", config.batch_size)
        tuner = make_tuner(config)
        tuner.search(train_ds.map(one_hot), validation_data=valid_ds.map(one_hot), epochs=config.epochs,
                     callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=config.patience)],
                     shuffle=False, verbose=(2 if os.environ.get("CI") else 1) if verbose is None else verbose)


# Settings that may differ when a search is resumed: where it is, whether to start over, and the trial budget
# (rerunning with a larger --max-trials is how a search is continued).
RESUMABLE = ("project", "overwrite", "max_trials")


def search_record(config: SearchConfig, spec: DataSpec) -> dict:
    """What a project records of its search (search.json): the data and every search setting."""
    return {"data": spec.to_json(), "search": dataclasses.asdict(config)}


def check_same_search(project: str, record: dict) -> None:
    """A project resumes only the search it was started with, like a run: other data or settings are refused,
    naming what changed (a search.json that cannot be read is refused too)."""
    path = os.path.join(project, SEARCH_RECORD)
    if not os.path.isfile(path):
        return  # an old project (before search.json): nothing to compare with
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise DataError(f"{path}: not a search record; pass --overwrite to start the search over")
    old, new = saved.get("search") or {}, record["search"]
    changed = sorted(k for k in {*old, *new} if k not in RESUMABLE and old.get(k) != new.get(k))
    changed += ["data"] if saved.get("data") != record["data"] else []
    if changed:
        shown = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" if k != "data" else "the data flags"
                          for k in changed)
        raise DataError(f"{project} holds a search started with other settings ({shown}): rerun it with the same "
                        "flags to resume it, choose another --project, or pass --overwrite to start over")


def read_trial(path: str) -> dict:
    """One row of the trial table from a trial.json (KeyError, TypeError, ... where it is not one)."""
    with open(path, encoding="utf-8") as f:
        t = json.load(f)
    values = t["hyperparameters"]["values"]
    trial_kwargs(values)  # every hyperparameter the table shows is there and has its type
    values = {**values, "learning_rate": float(values["learning_rate"])}
    metrics = (t.get("metrics") or {}).get("metrics") or {}

    def best(metric: str) -> float | None:
        obs = (metrics.get(metric) or {}).get("observations") or []
        return max((float(o["value"][0]) for o in obs), default=None)

    message = t.get("message") or ""
    return {"trial": str(t["trial_id"]), "status": str(t["status"]), **values,
            "val_accuracy": best("val_accuracy"), "seconds": best("train_seconds"),
            "reason": message.strip().splitlines()[-1] if message.strip() else ""}


def load_trials(project: str, log=print) -> list[dict]:
    """Every trial of a project: id, status, hyperparameters, val_accuracy, time, params, reason."""
    if not os.path.isdir(project):
        raise DataError(f"{project}: no tuning project there; run a search first")
    trials = []
    for name in sorted(os.listdir(project)):
        path = os.path.join(project, name, "trial.json")
        if not name.startswith("trial_") or not os.path.isfile(path):
            continue
        try:
            row = read_trial(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
            log(f"warning: skipped {path}: not a readable keras-tuner trial ({type(err).__name__}: {err})")
            continue
        values = {k: row[k] for k in SPACE}
        try:
            row["params"] = build_cnn(**trial_kwargs(values)).count_params()
        except (ValueError, KeyError):
            row["params"] = None
        trials.append(row)
    if not trials:
        raise DataError(f"{project}: no trials yet")
    return trials


def summarise(project: str, log=print) -> list[dict]:
    """Print the trial table; write summary.csv (and summary.png when a trial completed)."""
    trials = load_trials(project, log)
    done = sorted((t for t in trials if t["val_accuracy"] is not None), key=lambda t: -t["val_accuracy"])
    failed = [t for t in trials if t["status"] == "FAILED"]
    cols = ["trial", "base_filters", "blocks", "kernel_size", "padding", "strides", "dropout", "dense_units",
            "learning_rate", "params", "val_accuracy", "seconds"]
    log(f"{'trial':<6}{'filt':>5}{'blk':>4}{'k':>3}{'pad':>6}{'str':>4}{'drop':>6}{'dense':>6}{'lr':>9}"
        f"{'params':>9}{'val_acc':>9}{'sec':>7}")
    for t in done:
        log(f"{t['trial']:<6}{t['base_filters']:>5}{t['blocks']:>4}{t['kernel_size']:>3}{t['padding']:>6}"
            f"{t['strides']:>4}{t['dropout']:>6.1f}{t['dense_units']:>6}{t['learning_rate']:>9.1e}"
            f"{t['params'] or 0:>9}{t['val_accuracy']:>9.3f}{t['seconds'] or 0:>7.1f}")
    log(f"{len(done)} trials completed, {len(failed)} failed")
    for t in failed:
        log(f"  trial {t['trial']} FAILED: {t['reason'][:200] or 'no reason recorded'}")
    written = [os.path.join(project, SUMMARY_CSV)]
    with atomic_path(written[0]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols + ["status", "reason"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(trials)
    if done:
        written.append(os.path.join(project, SUMMARY_PNG))
        plot_tuning(done, written[-1])
    log(f"Wrote {' and '.join(written)}")
    return trials


def best_trial(project: str) -> dict:
    trials = [t for t in load_trials(project) if t["val_accuracy"] is not None]
    if not trials:
        raise DataError(f"{project}: no completed trial to export")
    return max(trials, key=lambda t: t["val_accuracy"])


def searched_with(project: str) -> tuple[DataSpec | None, dict]:
    """The DataSpec and SearchConfig fields a project was searched with (None, {} for an old project)."""
    path = os.path.join(project, SEARCH_RECORD)
    if not os.path.isfile(path):
        return None, {}
    record = read_json(path)
    return DataSpec.from_json(record["data"]), record.get("search", {})


def best_train_config(project: str, search_settings: dict, **fields) -> TrainConfig:
    """A TrainConfig for the best trial: its model settings and learning rate, the search's
    epochs (patience as early stopping), batch size and seed, then ``fields`` on top."""
    best = best_trial(project)
    search = SearchConfig()  # a search recorded before a setting existed ran with its default
    recorded = {name: search_settings.get(name, getattr(search, name)) for name in SearchConfig.RETRAINING}
    settings = {"epochs": recorded["epochs"], "early_stopping": recorded["patience"],
                "batch_size": recorded["batch_size"], "seed": recorded["seed"]}
    config = TrainConfig(model="cnn", **trial_kwargs(best), learning_rate=float(best["learning_rate"]),
                         **{**settings, **fields})
    config.origin = {**(config.origin or {}), "tuning_project": os.path.abspath(project), "trial": best["trial"],
                     "val_accuracy_in_search": best["val_accuracy"]}
    return config
