"""Predict the instrument family of wav files.

    python -m nsynth_keras.predict saved_models/<run> some_note.wav other.wav --top-k 3

Any wav works: it is resampled to 16 kHz, mixed to mono and zero-padded or cropped to 4 s
(the output says which). A file that cannot be read gets a one-line error and the others
are still predicted; the exit code is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from nsynth_keras.audio import AudioError, Clip, read_wav
from nsynth_keras.config import FAMILIES
from nsynth_keras.features import log_mel
from nsynth_keras.inference import Classifier, load_classifier
from nsynth_keras.runs import RunError


def predict_clips(clf: Classifier, clips: list[Clip]) -> np.ndarray:
    """Probabilities [n, 11] for decoded clips."""
    waves = np.stack([c.waveform for c in clips])
    x = waves if clf.takes_waveform else log_mel(waves).numpy()
    return clf.predict(x)


def top_k(probs: np.ndarray, k: int) -> list[tuple[str, float]]:
    order = np.argsort(probs)[::-1][:k]
    return [(FAMILIES[i], float(probs[i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nsynth_keras.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="run folder, .keras or .tflite file")
    parser.add_argument("wavs", nargs="+", help="wav files")
    parser.add_argument("--top-k", type=int, default=3, help="families to show per file (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= len(FAMILIES):
        parser.error(f"--top-k must be 1..{len(FAMILIES)}")
    try:
        clf = load_classifier(args.model)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    clips, failed = [], []
    for path in args.wavs:
        try:
            clips.append(read_wav(path))
        except AudioError as err:
            failed.append({"file": path, "error": err.problem})
            print(f"error: {err}", file=sys.stderr)
    results = []
    if clips:
        for clip, probs in zip(clips, predict_clips(clf, clips)):
            results.append({"file": clip.path, "top": [{"family": f, "probability": p}
                                                       for f, p in top_k(probs, args.top_k)],
                            "fixups": clip.fixups})
    if args.json:
        print(json.dumps({"model": clf.path, "predictions": results, "errors": failed}, indent=2))
    else:
        for r in results:
            guesses = ", ".join(f"{t['family']} {t['probability']:.2f}" for t in r["top"])
            note = f"  [{'; '.join(r['fixups'])}]" if r["fixups"] else ""
            print(f"{r['file']}: {guesses}{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
