"""keras-tuner search over the CNN: kernel count, kernel size, padding, stride, blocks,
Dropout, dense width and learning rate, on the same build_cnn the train command uses.

    python -m nsynth_keras.tune --data-dir ../shared/nsynth --max-trials 20 --project saved_models/tuning/demo
    python -m nsynth_keras.tune --project saved_models/tuning/demo --summary
    python -m nsynth_keras.tune --project saved_models/tuning/demo --export-best

Rerunning the same search command continues an interrupted search (--overwrite starts over).
One process per project (and tuner id): a second one is refused while the first runs.
--export-best retrains the best trial with the data and settings the search recorded
(search.json in the project); data or training flags given with it override those, and the
run's config.json says which came from where.

Distributed (keras-tuner chief/worker): start the chief, then N workers, each with the same
command and the chief's address:
    KERASTUNER_TUNER_ID=chief  KERASTUNER_ORACLE_IP=<ip> KERASTUNER_ORACLE_PORT=8000 python -m nsynth_keras.tune ...
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=<ip> KERASTUNER_ORACLE_PORT=8000 python -m nsynth_keras.tune ...
The chief only hands out trials; the workers train. --project must be a folder every worker can write.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from nsynth_keras.cli import add_data_args, given_flags, make_parser, run_command, spec_from_args
from nsynth_keras.config import DEFAULT_RUNS_DIR
from nsynth_keras.data import DataSpec, Filters
from nsynth_keras.training import train
from nsynth_keras.tuning import SearchConfig, best_train_config, search, searched_with, summarise, tuner_id

# Data flags -> where they live in a DataSpec (for --export-best overrides).
SPEC_FLAGS = {"source": "source", "data_dir": "data_dir", "tfds_config": "tfds_config", "strict": "strict"}
FILTER_FLAGS = {"instrument_source": "sources", "pitch_min": "pitch_min", "pitch_max": "pitch_max",
                "max_examples": "max_examples"}
TRAIN_FLAGS = {"epochs": "epochs", "patience": "early_stopping", "batch_size": "batch_size", "seed": "seed"}


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("tune", __doc__)
    p.add_argument("--project", default=os.path.join(DEFAULT_RUNS_DIR, "tuning", "default"),
                   help="tuning project folder (default: %(default)s)")
    p.add_argument("--summary", action="store_true", help="print the trial table, write summary.csv/png")
    p.add_argument("--export-best", action="store_true", help="retrain the best configuration and export it")
    p.add_argument("--algorithm", choices=("hyperband", "bayesian", "random"), default="hyperband",
                   help="search algorithm (default: %(default)s)")
    p.add_argument("--max-trials", type=int, default=20,
                   help="trials for bayesian/random, at least 1 (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=12, help="max epochs per trial (default: %(default)s)")
    p.add_argument("--patience", type=int, default=3, help="EarlyStopping patience inside trials (default: 3)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="start the search over (or replace the export)")
    p.add_argument("--out", default=DEFAULT_RUNS_DIR, help="run folder parent for --export-best (default: %(default)s)")
    p.add_argument("--run-name", default=None, help="run folder name for --export-best (default: tuned-<project>)")
    add_data_args(p)
    return p


def export_spec(args: argparse.Namespace, given: set[str]) -> tuple[DataSpec, list[str]]:
    """The search's recorded DataSpec with the data flags given now on top; and which flags won."""
    recorded, _ = searched_with(args.project)
    now = spec_from_args(args)
    if recorded is None:
        return now, sorted(given & (set(SPEC_FLAGS) | set(FILTER_FLAGS)))
    spec_changes = {SPEC_FLAGS[k]: getattr(now, SPEC_FLAGS[k]) for k in SPEC_FLAGS if k in given}
    filter_changes = {FILTER_FLAGS[k]: getattr(now.filters, FILTER_FLAGS[k]) for k in FILTER_FLAGS if k in given}
    filters: Filters = dataclasses.replace(recorded.filters, **filter_changes)
    return dataclasses.replace(recorded, filters=filters, **spec_changes), sorted(
        k for k in given if k in SPEC_FLAGS or k in FILTER_FLAGS)


def export_best(args: argparse.Namespace, given: set[str]) -> None:
    spec, data_overrides = export_spec(args, given)
    _, search_settings = searched_with(args.project)
    train_overrides = {TRAIN_FLAGS[k]: getattr(args, k) for k in TRAIN_FLAGS if k in given}
    config = best_train_config(args.project, search_settings, out=args.out, overwrite=args.overwrite,
                               run_name=args.run_name or f"tuned-{os.path.basename(os.path.normpath(args.project))}",
                               **train_overrides)
    # Which settings came from the search's record and which from this command line.
    config.origin["from_search"] = sorted(v for v in TRAIN_FLAGS.values() if v not in train_overrides) + [
        "data"] if search_settings else []
    config.origin["from_command_line"] = sorted(train_overrides) + data_overrides
    print(f"Best trial {config.origin['trial']}: filters {config.filters}, kernel {config.kernel_size}, "
          f"{config.padding}, stride {config.strides}, dropout {config.dropout:.1f}, dense {config.dense_units}, "
          f"learning rate {config.learning_rate:.2e}, val_accuracy {config.origin['val_accuracy_in_search']:.3f}")
    train(config, spec)


def run(args: argparse.Namespace, given: set[str]) -> None:
    if args.summary:
        summarise(args.project)
    elif args.export_best:
        export_best(args, given)
    else:
        config = SearchConfig(args.project, args.algorithm, args.max_trials, args.epochs, args.patience,
                              args.batch_size, args.seed, args.overwrite)
        search(config, spec_from_args(args))
        if tuner_id() == "chief":
            summarise(args.project)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    given = given_flags(parser, argv)
    return run_command(parser, lambda args: run(args, given), argv)


if __name__ == "__main__":
    sys.exit(main())
