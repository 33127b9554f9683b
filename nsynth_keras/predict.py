"""Predict the instrument family of audio files (wav, flac, ogg, mp3), folders of them, or long recordings.

    python -m nsynth_keras.predict some_note.wav                     # the shipped pretrained model
    python -m nsynth_keras.predict saved_models/<run> some_note.wav other.flac --top-k 3
    python -m nsynth_keras.predict saved_models/<run> my_sample_pack/ --recursive --csv families.csv
    python -m nsynth_keras.predict saved_models/<run> recording.wav --hop 4 --json

The model names the family of one isolated note. Any wav, flac, ogg or mp3 works: it is resampled to 16 kHz, mixed to
mono and zero-padded or cropped to 4 s (the output says which). With --hop SECONDS a whole recording
is read and every 4 s window starting every SECONDS is classified (--hop 4: back-to-back windows, the
ones MediaPipe's AudioClassifier uses in stream mode). A folder needs --recursive: every audio file below it
gets one CSV row. A file that cannot be read gets a one-line error (and a CSV row saying why); the
others are still predicted and the exit code is 1. Files are read and predicted in batches; a
recording (--hop) is streamed window by window, so memory does not grow with its length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nsynth_keras.cli import make_parser, positive_float, run_command
from nsynth_keras.core.config import FAMILIES
from nsynth_keras.core.files import atomic_path, check_output_file
from nsynth_keras.deploy.inference import SAVED_MODEL_WARNING, load_classifier
from nsynth_keras.deploy.prediction import classify_files, csv_text, wav_files
from nsynth_keras.models.runs import looks_like_model, run_or_pretrained


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("predict", __doc__)
    parser.add_argument("inputs", nargs="+", metavar="[RUN] AUDIO",
                        help="optionally a model first (run folder, .keras or .tflite file, or a trusted SavedModel "
                             "folder; default: the shipped pretrained model), then audio files (wav, flac, ogg, "
                             "mp3), or folders with --recursive")
    parser.add_argument("--top-k", type=int, default=3, help="families to show per file (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--csv", default=None, metavar="FILE",
                        help="write one CSV row per file (per window with --hop) to this file, never a folder (an "
                             "existing file is replaced, and the output says so); '-' for stdout (default with "
                             "folders: stdout)")
    parser.add_argument("--recursive", action="store_true", help="classify every .wav below the folders given")
    parser.add_argument("--hop", type=positive_float, default=None, metavar="SECONDS",
                        help="classify each 4 s window of whole recordings, one every SECONDS (default: off, "
                             "the first 4 s of each file)")
    parser.add_argument("--trust-saved-model", action="store_true",
                        help=f"accept a SavedModel folder: {SAVED_MODEL_WARNING}")
    return parser


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.top_k <= len(FAMILIES):
        raise ValueError(f"--top-k must be 1..{len(FAMILIES)}")
    given_model = args.inputs[0] if looks_like_model(args.inputs[0]) else None
    audio = args.inputs[1:] if given_model else args.inputs
    if not audio:
        raise ValueError(f"no audio files given after the model {given_model}")
    files = wav_files(audio, args.recursive, on_skip=lambda message: print(f"warning: {message}", file=sys.stderr))
    if not files:
        raise ValueError(f"no audio files (wav, flac, ogg, mp3) in {', '.join(audio)}")
    csv_out = args.csv or ("-" if any(os.path.isdir(p) for p in audio) and not args.json else None)
    replacing = csv_out not in (None, "-") and check_output_file(csv_out, "--csv")  # before any work
    model = run_or_pretrained(given_model, log=lambda line: print(line, file=sys.stderr))
    clf = load_classifier(model, trust_saved_model=args.trust_saved_model)
    results, failed = classify_files(clf, files, args.top_k, args.hop,
                                     on_error=lambda message: print(f"error: {message}", file=sys.stderr))
    if args.json:
        print(json.dumps({"model": clf.path, "predictions": results, "errors": failed}, indent=2, allow_nan=False))
    elif csv_out == "-":
        sys.stdout.write(csv_text(files, results, failed, args.top_k, args.hop is not None))
    elif csv_out is None:
        for r in results:
            note = f"  [{'; '.join(r['fixups'])}]" if r["fixups"] else ""
            for w in r.get("windows", [r]):
                where = f" @ {w['start_s']:.1f} s" if "start_s" in w else ""
                print(f"{r['file']}{where}: " + ", ".join(f"{t['family']} {t['probability']:.2f}" for t in w["top"])
                      + note)
    if csv_out and csv_out != "-":
        with atomic_path(csv_out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(csv_text(files, results, failed, args.top_k, args.hop is not None))
        print(f"{'Replaced' if replacing else 'Wrote'} {csv_out} ({len(results)} files, {len(failed)} unreadable)",
              file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
