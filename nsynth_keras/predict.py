"""Predict the instrument family of wav files, folders of them, or long recordings.

    python -m nsynth_keras.predict saved_models/<run> some_note.wav other.wav --top-k 3
    python -m nsynth_keras.predict saved_models/<run> my_sample_pack/ --recursive --csv families.csv
    python -m nsynth_keras.predict saved_models/<run> recording.wav --hop 4 --json

The model names the family of one isolated note. Any wav works: it is resampled to 16 kHz, mixed to
mono and zero-padded or cropped to 4 s (the output says which). With --hop SECONDS a whole recording
is read and every 4 s window starting every SECONDS is classified (--hop 4: back-to-back windows, the
ones MediaPipe's AudioClassifier uses in stream mode). A folder needs --recursive: every .wav below it
gets one CSV row. A file that cannot be read gets a one-line error (and a CSV row saying why); the
others are still predicted and the exit code is 1. Files are read and predicted in batches.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

import numpy as np

from nsynth_keras.audio import AudioError, read_recording, read_wav
from nsynth_keras.cli import make_parser, run_command
from nsynth_keras.config import FAMILIES
from nsynth_keras.inference import SAVED_MODEL_WARNING, load_classifier, predict_clips, predict_windows, top_k
from nsynth_keras.runs import atomic_path

BATCH = 64


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("predict", __doc__)
    parser.add_argument("model", help="run folder, .keras or .tflite file (or a trusted SavedModel folder)")
    parser.add_argument("wavs", nargs="+", help="wav files, or folders with --recursive")
    parser.add_argument("--top-k", type=int, default=3, help="families to show per file (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--csv", default=None, metavar="PATH",
                        help="write one CSV row per file (per window with --hop) here; '-' for stdout "
                             "(default with folders: stdout)")
    parser.add_argument("--recursive", action="store_true", help="classify every .wav below the folders given")
    parser.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                        help="classify each 4 s window of whole recordings, one every SECONDS (default: off, "
                             "the first 4 s of each file)")
    parser.add_argument("--trust-saved-model", action="store_true",
                        help=f"accept a SavedModel folder: {SAVED_MODEL_WARNING}")
    return parser


def wav_files(paths: list[str], recursive: bool) -> list[str]:
    files = []
    for path in paths:
        if os.path.isdir(path):
            if not recursive:
                raise ValueError(f"{path} is a folder: pass --recursive to classify every .wav below it")
            for root, dirs, names in os.walk(path):
                dirs.sort()
                files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(".wav")]
        else:
            files.append(path)
    return files


def guesses(probs: np.ndarray, k: int) -> list[dict]:
    return [{"family": f, "probability": p} for f, p in top_k(probs, k)]


def classify(clf, files: list[str], args) -> tuple[list[dict], list[dict]]:
    """(one result per readable file, one error per unreadable file), in file order."""
    results, failed = [], []
    for start in range(0, len(files), BATCH):
        clips = []
        for path in files[start : start + BATCH]:
            try:
                clips.append(read_recording(path) if args.hop else read_wav(path))
            except AudioError as err:
                failed.append({"file": path, "error": err.problem})
                print(f"error: {err}", file=sys.stderr)
        if args.hop:
            for clip in clips:
                windows = [{"start_s": round(t, 3), "top": guesses(p, args.top_k)}
                           for t, p in predict_windows(clf, clip.waveform, args.hop)]
                results.append({"file": clip.path, "windows": windows, "fixups": clip.fixups})
            continue
        for clip, probs in zip(clips, predict_clips(clf, clips)):
            if not np.isfinite(probs).all():
                failed.append({"file": clip.path, "error": "the model returned NaN or infinite probabilities"})
                print(f"error: {clip.path}: the model returned NaN or infinite probabilities", file=sys.stderr)
                continue
            results.append({"file": clip.path, "top": guesses(probs, args.top_k), "fixups": clip.fixups})
    return results, failed


def csv_text(files: list[str], results: list[dict], failed: list[dict], k: int, hop: bool) -> str:
    """One row per file (per window with --hop), in file order; an unreadable file's row says why."""
    rows = {}
    for r in results:
        rows[r["file"]] = [[r["file"], *([w["start_s"]] if hop else []),
                            *[c for t in w["top"] for c in (t["family"], f"{t['probability']:.4f}")], ""]
                           for w in r.get("windows", [r])]
    for f in failed:
        rows[f["file"]] = [[f["file"], *([""] if hop else []), *[""] * (2 * k), f["error"]]]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", *(["start_s"] if hop else []),
                     *[c for i in range(1, k + 1) for c in (f"family_{i}", f"probability_{i}")], "error"])
    for path in files:
        writer.writerows(rows.get(path, []))
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.top_k <= len(FAMILIES):
        raise ValueError(f"--top-k must be 1..{len(FAMILIES)}")
    files = wav_files(args.wavs, args.recursive)
    if not files:
        raise ValueError(f"no .wav files in {', '.join(args.wavs)}")
    clf = load_classifier(args.model, trust_saved_model=args.trust_saved_model)
    results, failed = classify(clf, files, args)
    csv_out = args.csv or ("-" if any(os.path.isdir(p) for p in args.wavs) and not args.json else None)
    if args.json:
        print(json.dumps({"model": clf.path, "predictions": results, "errors": failed}, indent=2, allow_nan=False))
    elif csv_out == "-":
        sys.stdout.write(csv_text(files, results, failed, args.top_k, bool(args.hop)))
    elif csv_out is None:
        for r in results:
            note = f"  [{'; '.join(r['fixups'])}]" if r["fixups"] else ""
            for w in r.get("windows", [r]):
                where = f" @ {w['start_s']:.1f} s" if "start_s" in w else ""
                print(f"{r['file']}{where}: " + ", ".join(f"{t['family']} {t['probability']:.2f}" for t in w["top"])
                      + note)
    if csv_out and csv_out != "-":
        with atomic_path(csv_out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(csv_text(files, results, failed, args.top_k, bool(args.hop)))
        print(f"Wrote {csv_out} ({len(results)} files, {len(failed)} unreadable)", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
