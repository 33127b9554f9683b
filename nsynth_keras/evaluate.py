"""Evaluate a trained model on a split: per-family report, confusion matrix, results by source.

    python -m nsynth_keras.evaluate saved_models/<run> --data-dir ../shared/nsynth --split test
    python -m nsynth_keras.evaluate saved_models/<run> --onset-delay 0.1    # every note 100 ms later

MODEL is a run folder (its model.keras), a .keras or .tflite file, or (with --trust-saved-model)
a SavedModel folder; the report is the same for each. Writes eval_<split>.json and
confusion_<split>.png into the run folder (or --out); for a model other than the run's
model.keras the names get its stem.
"""

from __future__ import annotations

import argparse
import sys

from nsynth_keras.cli import add_data_args, make_parser, run_command, spec_from_args
from nsynth_keras.deploy.inference import SAVED_MODEL_WARNING
from nsynth_keras.models.runs import run_or_pretrained
from nsynth_keras.reports.evaluation import evaluate, format_report


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("evaluate", __doc__)
    parser.add_argument("model", nargs="?", default=None,
                        help="run folder, .keras or .tflite file (or a trusted SavedModel folder); default: the "
                             "shipped pretrained model")
    parser.add_argument("--out", default=None, help="folder for the report files (default: the run folder)")
    parser.add_argument("--trust-saved-model", action="store_true",
                        help=f"accept a SavedModel folder: {SAVED_MODEL_WARNING}")
    parser.add_argument("--onset-delay", type=float, default=0.0, metavar="S",
                        help="move every note S seconds later first (silence in front, its end cut): how the model "
                             "does on a recording that does not start at the note's onset (every NSynth note does); "
                             "written as eval_<split>_onset<ms>ms.json (default: 0)")
    add_data_args(parser, split="test")
    return parser


def run(args: argparse.Namespace) -> None:
    model = run_or_pretrained(args.model, log=print)
    r, json_path = evaluate(model, spec_from_args(args), args.split, args.out, args.trust_saved_model,
                            onset_delay=args.onset_delay)
    moved = f", every note {args.onset_delay * 1000:g} ms later" if args.onset_delay else ""
    print(format_report(r, f"{model} on {args.split}{moved} ({r['model_kind']})"))
    print(f"\nWrote {json_path} and its confusion_{args.split}*.png")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
