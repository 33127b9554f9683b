"""Predict the instrument family of wav files.

    python -m nsynth_keras.predict saved_models/<run> some_note.wav other.wav --top-k 3

Any wav works: it is resampled to 16 kHz, mixed to mono and zero-padded or cropped to 4 s
(the output says which). The model names the family of one isolated note. A file that cannot
be read gets a one-line error and the others are still predicted; the exit code is 1 if any
file failed. Files are read and predicted in batches, so a long list needs little memory.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from nsynth_keras.audio import AudioError, read_wav
from nsynth_keras.cli import make_parser, run_command
from nsynth_keras.config import FAMILIES
from nsynth_keras.inference import SAVED_MODEL_WARNING, load_classifier, predict_clips, top_k

BATCH = 64


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("predict", __doc__)
    parser.add_argument("model", help="run folder, .keras or .tflite file (or a trusted SavedModel folder)")
    parser.add_argument("wavs", nargs="+", help="wav files")
    parser.add_argument("--top-k", type=int, default=3, help="families to show per file (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--trust-saved-model", action="store_true",
                        help=f"accept a SavedModel folder: {SAVED_MODEL_WARNING}")
    return parser


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.top_k <= len(FAMILIES):
        raise ValueError(f"--top-k must be 1..{len(FAMILIES)}")
    clf = load_classifier(args.model, trust_saved_model=args.trust_saved_model)
    results, failed = [], []
    for start in range(0, len(args.wavs), BATCH):
        clips = []
        for path in args.wavs[start : start + BATCH]:
            try:
                clips.append(read_wav(path))
            except AudioError as err:
                failed.append({"file": path, "error": err.problem})
                print(f"error: {err}", file=sys.stderr)
        for clip, probs in zip(clips, predict_clips(clf, clips)):
            if not np.isfinite(probs).all():
                failed.append({"file": clip.path, "error": "the model returned NaN or infinite probabilities"})
                print(f"error: {clip.path}: the model returned NaN or infinite probabilities", file=sys.stderr)
                continue
            result = {"file": clip.path, "top": [{"family": f, "probability": p} for f, p in top_k(probs, args.top_k)],
                      "fixups": clip.fixups}
            results.append(result)
            if not args.json:
                guesses = ", ".join(f"{t['family']} {t['probability']:.2f}" for t in result["top"])
                note = f"  [{'; '.join(clip.fixups)}]" if clip.fixups else ""
                print(f"{clip.path}: {guesses}{note}")
    if args.json:
        print(json.dumps({"model": clf.path, "predictions": results, "errors": failed}, indent=2, allow_nan=False))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
