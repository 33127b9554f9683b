"""Many files through one classifier: the audio files a command names (folders walked), each file's top guesses
or every window of a long recording, and the CSV the predict command writes."""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from nsynth_keras.data.audio import AUDIO_EXTENSIONS, AudioError, open_recording, read_wav
from nsynth_keras.deploy.inference import Classifier, non_finite, predict_clips, predict_windows, top_k

BATCH = 64  # clips read and predicted together; --hop recordings go one at a time, windows streamed


def wav_files(paths: list[str], recursive: bool, on_skip=None) -> list[str]:
    """The audio files named, and with ``recursive`` every .wav/.flac/.ogg/.mp3 below the folders named, in order.
    Symbolic links to folders are followed once: a link back to a folder already walked is skipped, and
    ``on_skip(message)`` is told."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            if not recursive:
                raise ValueError(f"{path} is a folder: pass --recursive to classify every audio file below it")
            seen = {os.path.realpath(path)}
            for root, dirs, names in os.walk(path, followlinks=True):
                walk = []
                for d in sorted(dirs):
                    real = os.path.realpath(os.path.join(root, d))
                    if real in seen:
                        if on_skip:
                            on_skip(f"{os.path.join(root, d)}: skipped, a link to a folder already read ({real})")
                        continue
                    seen.add(real)
                    walk.append(d)
                dirs[:] = walk
                files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(AUDIO_EXTENSIONS)]
        else:
            files.append(path)
    return files


def guesses(probs: np.ndarray, k: int) -> list[dict]:
    return [{"family": f, "probability": p} for f, p in top_k(probs, k)]


NON_FINITE = "the model returned NaN or infinite probabilities"


def classify_files(clf: Classifier, files: list[str], k: int = 3, hop: float | None = None,
                   on_error=None) -> tuple[list[dict], list[dict]]:
    """(one result per readable file, one error per unreadable file), in file order.

    Without ``hop`` each file's first 4 s, BATCH files at a time; with ``hop`` every 4 s window of
    each whole recording, one file at a time. ``on_error(AudioError | str)`` is told of each failure."""
    results, failed = [], []

    def fail(path: str, problem: str) -> None:
        failed.append({"file": path, "error": problem})
        if on_error:
            on_error(f"{path}: {problem}")

    if hop is not None:
        for path in files:
            try:
                rec = open_recording(path)
                predicted = predict_windows(clf, rec, hop)
            except AudioError as err:
                fail(path, err.problem)
                continue
            bad = [t for t, p in predicted if non_finite(p)]
            if bad:
                fail(path, f"{NON_FINITE} (in {len(bad)} of {len(predicted)} windows, the first at {bad[0]:.1f} s)")
                continue
            windows = [{"start_s": round(t, 3), "top": guesses(p, k)} for t, p in predicted]
            results.append({"file": path, "windows": windows, "fixups": rec.fixups})
        return results, failed
    for start in range(0, len(files), BATCH):
        clips = []
        for path in files[start : start + BATCH]:
            try:
                clips.append(read_wav(path))
            except AudioError as err:
                fail(path, err.problem)
        for clip, probs in zip(clips, predict_clips(clf, clips)):
            if non_finite(probs):
                fail(clip.path, NON_FINITE)
                continue
            results.append({"file": clip.path, "top": guesses(probs, k), "fixups": clip.fixups})
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
