"""Serve the demo page with a run's waveform model, on 127.0.0.1 only.

    python -m nsynth_keras.web [saved_models/<run>] [--port 8000]     # default: the shipped pretrained model

Open the printed URL: choose or drop wav files (top-3 families for each), or listen to the microphone
(a family for every 4 s). The model runs in the browser, in MediaPipe Tasks Audio (WebAssembly): the
run's model_waveform.tflite (python -m nsynth_keras.export writes it), the page web/ and the npm
package it loads (npm ci --prefix web). Any static server can host the same files (README).
"""

from __future__ import annotations

import argparse
import sys
import time

from nsynth_keras.cli import make_parser, run_command


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("web", __doc__)
    p.add_argument("run", nargs="?", default=None,
                   help="run folder with model_waveform.tflite (or that .tflite file); default: the shipped "
                        "pretrained model")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1, 0 for any free one (default: "
                                                          "%(default)s)")
    p.add_argument("--log", action="store_true", help="print every request")
    return p


def run(args: argparse.Namespace) -> None:
    # Imported here so that --help and flag errors answer without loading TensorFlow (several seconds).
    from nsynth_keras.deploy.webpage import model_info, serve, waveform_model
    from nsynth_keras.models.runs import run_or_pretrained

    model = waveform_model(run_or_pretrained(args.run, log=print))
    info = model_info(model)
    if "error" in info:
        print(f"warning: {info['error']} (the page will say so)", file=sys.stderr)
    with serve(model, args.port, quiet=not args.log) as url:
        print(f"Serving {model} at {url}  (Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
