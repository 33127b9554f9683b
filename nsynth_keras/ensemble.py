"""Average several runs into one model (an ensemble of seeds): a run folder whose model.keras gives the mean of
the members' family probabilities, read by evaluate, predict, export, tflite_check and web like any run.

    python -m nsynth_keras.ensemble saved_models/run-seed0 saved_models/run-seed1 saved_models/run-seed2 \\
        --out saved_models --run-name run-ensemble
    python -m nsynth_keras.evaluate saved_models/run-ensemble --data-dir ../shared/nsynth

It costs its member count in size and latency: measure it beside its members (bench/ensemble.py) before
shipping it. Members of one frontend share a log-mel input; members of different frontends (log-mel and PCEN) are
joined at the waveform, each with its own frontend inside, and such an ensemble exports as the waveform TFLite
model only.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

from nsynth_keras.cli import make_parser, run_command
from nsynth_keras.core.config import DEFAULT_RUNS_DIR
from nsynth_keras.core.files import check_output_dir
from nsynth_keras.models.ensemble import write_ensemble
from nsynth_keras.models.runs import RunError, check_run_name


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("ensemble", __doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or .keras files) to average, at least two")
    p.add_argument("--out", default=DEFAULT_RUNS_DIR, help="folder for the ensemble's run folder (default: "
                                                           "%(default)s)")
    p.add_argument("--run-name", default=None, help="its folder name (default: ensemble-<date>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder of that name")
    return p


def run(args: argparse.Namespace) -> None:
    if len(args.runs) < 2:
        raise RunError(f"an ensemble needs at least two runs, got {len(args.runs)}")
    name = check_run_name(args.run_name or f"ensemble-{datetime.now():%Y%m%d-%H%M%S}")
    check_output_dir(args.out, "--out")
    dest = os.path.join(args.out, name)
    if os.path.exists(dest) and not args.overwrite:
        raise RunError(f"{dest} exists: choose another --run-name or pass --overwrite")
    write_ensemble(args.runs, dest)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
