"""The on-device check: run every exported .tflite in the standalone LiteRT interpreter on
real notes and compare it with the Keras model.

    python -m nsynth_keras.tflite_check saved_models/<run> --data-dir ../shared/nsynth --split test [--browser]

RUN is a run folder (every .tflite in it) or one .tflite file (checked against the model.keras
beside it). Prints, per model: file size, top-1 agreement with Keras, max |probability
difference| (max|dp|), accuracy and mean single-clip latency. Exits 1 if a model falls below
its threshold. --browser adds model_waveform.tflite in the demo page (web/, MediaPipe Tasks for Web)
in headless Chromium: every note as a clip, and one note per family back to back in 4 s windows.
"""

from __future__ import annotations

import argparse
import os
import sys

from nsynth_keras.cli import add_data_args, make_parser, run_command, spec_from_args
from nsynth_keras.core.files import write_json
from nsynth_keras.deploy.ondevice import check_run, format_check_table, litert_version, models_to_check
from nsynth_keras.models.runs import RunFolder, run_or_pretrained


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("tflite_check", __doc__)
    parser.add_argument("run", nargs="?", default=None,
                        help="run folder with model.keras and .tflite files, or one .tflite file (default: the "
                             "shipped pretrained model)")
    parser.add_argument("--browser", action="store_true",
                        help="also run model_waveform.tflite in the demo page (MediaPipe Tasks for Web) in headless "
                             "Chromium; needs the browser extra (README 'In the browser')")
    add_data_args(parser, split="test")
    return parser


def run(args: argparse.Namespace) -> int:
    args.run = run_or_pretrained(args.run, log=print)
    keras_path, _ = models_to_check(args.run)
    rows = check_run(args.run, spec_from_args(args), args.split, browser=args.browser)
    print(f"LiteRT interpreter (ai-edge-litert {litert_version()}), split {args.split}, agreement with {keras_path}")
    print(format_check_table(rows))
    for r in rows:
        if "model_load_ms" in r:
            print(f"{r['model']}: the page loaded the model (wasm + .tflite) in {r['model_load_ms']:.0f} ms; "
                  f"the page was ready {r['page_ready_ms']:.0f} ms after opening")
    folder = RunFolder(args.run if os.path.isdir(args.run) else os.path.dirname(os.path.abspath(args.run)))
    write_json(folder.tflite_check_json(args.split), rows)
    failed = [r["model"] for r in rows if not r["passed"]]
    if failed:
        print(f"below threshold: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
