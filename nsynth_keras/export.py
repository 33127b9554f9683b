"""Export a trained run: SavedModel and TFLite variants (fp32, fp16, dynamic-range int8,
full int8, and a raw-waveform model with the log-mel frontend inside), labels attached.

    python -m nsynth_keras.export saved_models/<run> --data-dir ../shared/nsynth
"""

from __future__ import annotations

import argparse
import sys

from nsynth_keras.cli import add_data_args, make_parser, run_command, spec_from_args
from nsynth_keras.deploy.tflite import EXPORT_FORMATS, export_run
from nsynth_keras.models.runs import RunFolder


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("export", __doc__)
    parser.add_argument("run", help="run folder written by nsynth_keras.train")
    parser.add_argument("--variants", nargs="+", choices=tuple(EXPORT_FORMATS), default=None,
                        help="TFLite variants to write (default: all; a model that takes audio, an ensemble of "
                             "frontends: waveform)")
    add_data_args(parser)
    return parser


def run(args: argparse.Namespace) -> None:
    print(f"Exporting {args.run}")
    export_run(args.run, spec_from_args(args), tuple(args.variants) if args.variants else None)
    print(f"Labels: {RunFolder(args.run).labels} (also in the TFLite Metadata of every .tflite)")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
