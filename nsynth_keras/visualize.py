"""Draw kernels.png (first conv layer), top_activations.png (the notes that excite chosen
channels of each block most) and mels_by_family.png for a trained run.

    python -m nsynth_keras.visualize saved_models/<run> --data-dir ../shared/nsynth
"""

from __future__ import annotations

import argparse
import sys

from nsynth_keras.cli import add_data_args, make_parser, run_command, spec_from_args
from nsynth_keras.reports.plots import visualize_run


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("visualize", __doc__)
    parser.add_argument("run", help="run folder (or .keras file)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: the run folder)")
    add_data_args(parser, split="valid")
    return parser


def run(args: argparse.Namespace) -> None:
    for path in visualize_run(args.run, spec_from_args(args), args.split, args.out).values():
        print(f"Wrote {path}")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
