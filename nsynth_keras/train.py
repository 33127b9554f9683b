"""Train a CNN on NSynth log-mels and write a complete run folder.

    python -m nsynth_keras.train --data-dir ../shared/nsynth --epochs 3

The run folder (saved_models/<run-name>/) gets model.keras, saved_model/, model.tflite,
labels.txt, history.json, config.json, learning_curves.png and TensorBoard logs/. It is
written under a temporary name and renamed when complete. Rerunning a killed run with the
same --run-name (and the same settings) resumes it from its last finished epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from nsynth_keras.cli import add_data_args, make_parser, run_command, spec_from_args
from nsynth_keras.core.files import read_json
from nsynth_keras.core.settings import add_flags, from_dict, given
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.learn.training import TrainConfig, train
from nsynth_keras.models.runs import RunError


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("train", __doc__)
    p.add_argument("--config", default=None, metavar="RUN/config.json",
                   help="rerun a run: start from the settings and data recorded in its config.json; flags given "
                        "here override them")
    add_data_args(p, extra=True)
    add_flags(p, TrainConfig)
    return p


def recorded(path: str) -> tuple[TrainConfig, DataSpec]:
    """The TrainConfig and DataSpec a run folder's config.json recorded, checked key by key exactly as the
    flags are (types, bounds, choices), before any data is read."""
    record = read_json(path)
    try:
        if not isinstance(record, dict) or not {"settings", "data"} <= set(record):
            raise ValueError("no 'settings' and 'data' objects")
        settings = record["settings"]
        if isinstance(settings, dict):
            settings = {k: v for k, v in settings.items() if k != "origin"}
        config = from_dict(TrainConfig, settings, "settings.")
        config.validate()
        return config, DataSpec.from_json(record["data"], "data.")
    except (TypeError, ValueError) as err:
        raise RunError(f"--config {path}: {err}") from None


def run(args: argparse.Namespace) -> None:
    config, spec = recorded(args.config) if args.config else (TrainConfig(), DataSpec())
    train(dataclasses.replace(config, **given(args, TrainConfig)), spec_from_args(args, spec))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
