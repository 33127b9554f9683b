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

from nsynth_keras.cli import add_data_args, make_parser, run_command, spec_from_args
from nsynth_keras.core.config import DEFAULT_RUNS_DIR
from nsynth_keras.core.settings import add_flags, given
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.notes import Filters
from nsynth_keras.learn.training import train
from nsynth_keras.learn.tuning import SearchConfig, best_train_config, search, searched_with, summarise, tuner_id


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("tune", __doc__)
    p.add_argument("--summary", action="store_true", help="print the trial table, write summary.csv/png")
    p.add_argument("--export-best", action="store_true", help="retrain the best configuration and export it")
    add_flags(p, SearchConfig)
    e = p.add_argument_group("--export-best")
    e.add_argument("--out", default=DEFAULT_RUNS_DIR, help="run folder parent (default: %(default)s)")
    e.add_argument("--run-name", default=None, help="run folder name (default: tuned-<project>)")
    add_data_args(p)
    return p


def export_best(args: argparse.Namespace, config: SearchConfig) -> None:
    """Retrain the best trial with the data and settings the search recorded; the flags given now win."""
    recorded, search_settings = searched_with(config.project)
    spec = spec_from_args(args, recorded)
    data_given = sorted({*given(args, DataSpec), *given(args, Filters)})
    retraining = {k: v for k, v in given(args, SearchConfig).items() if k in SearchConfig.RETRAINING}
    train_config = best_train_config(
        config.project, {**search_settings, **retraining}, out=args.out, overwrite=config.overwrite,
        run_name=args.run_name or f"tuned-{os.path.basename(os.path.normpath(config.project))}")
    # Which settings came from the search's record and which from this command line.
    train_config.origin["from_search"] = sorted(
        [k for k in SearchConfig.RETRAINING if k not in retraining] + ["data"]) if search_settings else []
    train_config.origin["from_command_line"] = sorted(retraining) + data_given
    print(f"Best trial {train_config.origin['trial']}: filters {train_config.filters}, kernel "
          f"{train_config.kernel_size}, {train_config.padding}, stride {train_config.strides}, dropout "
          f"{train_config.dropout:.1f}, dense {train_config.dense_units}, learning rate "
          f"{train_config.learning_rate:.2e}, val_accuracy {train_config.origin['val_accuracy_in_search']:.3f}")
    train(train_config, spec)


def run(args: argparse.Namespace) -> None:
    config = dataclasses.replace(SearchConfig(), **given(args, SearchConfig))
    if args.summary:
        summarise(config.project)
    elif args.export_best:
        export_best(args, config)
    else:
        search(config, spec_from_args(args))
        if tuner_id() == "chief":
            summarise(config.project)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
