"""The on-device check: every exported .tflite against the Keras model on real notes, in the LiteRT
interpreter and, for waveform models, in MediaPipe's AudioClassifier (clip and stream mode)."""

from __future__ import annotations

import glob
import os
import time

import ai_edge_litert
import numpy as np
from mediapipe.tasks import python as mp_tasks
from mediapipe.tasks.python import audio as mp_audio
from mediapipe.tasks.python.components.containers import audio_data as mp_audio_data

from nsynth_keras.core.config import CLIP_SECONDS, FAMILIES, INPUT_SHAPE, NUM_SAMPLES, SAMPLE_RATE
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.pipeline import load_split
from nsynth_keras.deploy.inference import KerasClassifier, TFLiteClassifier
from nsynth_keras.deploy.tflite import EXPORT_FORMATS, native_stderr_silenced, read_metadata
from nsynth_keras.models.runs import RunError, RunFolder, find_model, run_frontend

DEFAULT_THRESHOLD = (0.97, None)  # a .tflite of no known export format
# the check table's input column, by whether the model takes a waveform
INPUTS = {True: f"waveform [1, {NUM_SAMPLES}]", False: f"log-mel [n, {', '.join(map(str, INPUT_SHAPE))}]"}


def threshold(file_name: str) -> tuple[float, float | None]:
    """Minimum top-1 agreement with the Keras model, and max |prob diff| where one is promised: the export
    format's (model_fp32.tflite is the old name of model.tflite in earlier exports)."""
    for name, fmt in EXPORT_FORMATS.items():
        if file_name in (RunFolder.tflite_file(name), *(("model_fp32.tflite",) if name == "fp32" else ())):
            return fmt.agreement, fmt.max_diff
    return DEFAULT_THRESHOLD
LATENCY_CLIPS = 50


def single_clip_latency_ms(clf, x: np.ndarray, n: int = LATENCY_CLIPS) -> float:
    clf.predict(x[:1])  # warm-up (allocation, delegate set-up)
    times = []
    for i in range(min(n, len(x))):
        t = time.perf_counter()
        clf.predict(x[i : i + 1])
        times.append(time.perf_counter() - t)
    return 1000 * float(np.mean(times))


def models_to_check(run: str) -> tuple[str, list[str]]:
    """(the Keras reference, the .tflite files): a run folder's, or one .tflite file and its folder's model."""
    if os.path.isfile(run) and run.endswith(".tflite"):
        return find_model(os.path.dirname(os.path.abspath(run))), [run]
    keras_path = find_model(run)
    models = sorted(glob.glob(os.path.join(run, "*.tflite")))
    if not models:
        raise RunError(f"{run}: no .tflite models; run python -m nsynth_keras.train or nsynth_keras.export first")
    return keras_path, models


def check_row(name: str, kind: str, path: str, probs: np.ndarray, reference: np.ndarray, y: np.ndarray,
              latency_ms: float, threshold: tuple[float, float | None], **extra) -> dict:
    min_agree, max_diff = threshold
    row = {
        "model": name, "input": kind, "size_kib": round(os.path.getsize(path) / 1024, 1),
        "agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(probs - reference).max()),
        "accuracy": float((probs.argmax(1) == y).mean()),
        "notes": int(len(y)),
        "latency_ms": round(latency_ms, 3), "threshold_agreement": min_agree, "threshold_max_abs_diff": max_diff,
        **extra,
    }
    row["passed"] = row["agreement"] >= min_agree and (max_diff is None or row["max_abs_diff"] <= max_diff)
    return row


def check_run(run: str, spec: DataSpec, split: str, mediapipe: bool = True, browser: bool = False) -> list[dict]:
    """Every .tflite in the LiteRT interpreter; waveform models also in MediaPipe's AudioClassifier,
    in clip mode (every note) and in stream mode (one note per family, played back to back), and with
    ``browser`` in the demo page's MediaPipe Tasks for Web in headless Chromium."""
    keras_path, models = models_to_check(run)
    frontend, _ = run_frontend(keras_path)  # the features the run's log-mel models were trained on
    notes = load_split(spec, split, ("audio", "mel", "family"), frontend)
    waves, mels, y = notes["audio"], notes["mel"], notes["family"]
    reference = KerasClassifier(keras_path).predict(mels)
    rows = []
    for path in models:
        clf = TFLiteClassifier(path)
        x = waves if clf.takes_waveform else mels
        name = os.path.basename(path)
        rows.append(check_row(name, INPUTS[clf.takes_waveform], path,
                              clf.predict(x), reference, y, single_clip_latency_ms(clf, x),
                              threshold(name)))
        if mediapipe and clf.takes_waveform:
            probs, ms = mediapipe_clips(path, waves)
            rows.append(check_row(f"{name} [MediaPipe clips]", f"AudioClassifier, one {CLIP_SECONDS} s clip per note",
                                  path, probs, reference, y, ms, MEDIAPIPE_THRESHOLD))
            order = [int(np.flatnonzero(y == f)[0]) for f in np.unique(y)]  # one note per family
            t = time.perf_counter()
            windows = mediapipe_stream(path, np.concatenate([waves[i] for i in order]))
            ms = 1000 * (time.perf_counter() - t) / max(len(windows), 1)
            starts = [start for start, _ in windows]
            if starts != [NUM_SAMPLES / SAMPLE_RATE * k for k in range(len(order))]:
                raise RunError(f"{path}: MediaPipe stream mode gave windows at {starts} s, not one per "
                               f"{CLIP_SECONDS} s note")
            rows.append(check_row(f"{name} [MediaPipe stream]", f"AudioClassifier stream, {len(order)} notes back "
                                  "to back, 1 s chunks", path, np.stack([p for _, p in windows]), reference[order],
                                  y[order], ms, MEDIAPIPE_THRESHOLD, windows=len(windows)))
        if browser and clf.takes_waveform:
            rows += browser_rows(path, waves, reference, y)
    if browser and not any(r["model"].endswith("[browser]") for r in rows):
        raise RunError(f"{run}: --browser checks model_waveform.tflite, and there is none: run "
                       "python -m nsynth_keras.export first")
    return rows


def browser_rows(path: str, waves: np.ndarray, reference: np.ndarray, y: np.ndarray) -> list[dict]:
    """The same notes through the demo page's own classifier (MediaPipe Tasks for Web, WebAssembly) in
    headless Chromium: every note as a clip, and one note per family back to back as 4 s windows."""
    from nsynth_keras.deploy.webpage import headless_page, serve, wait_until_ready

    order = [int(np.flatnonzero(y == f)[0]) for f in np.unique(y)]
    memory = {"clips.f32": waves.astype("<f4").tobytes(),
              "recording.f32": np.concatenate([waves[i] for i in order]).astype("<f4").tobytes()}
    name = os.path.basename(path)
    with serve(path, memory=memory) as url, headless_page(url) as page:
        t = time.perf_counter()
        load_ms = wait_until_ready(page)["loadMs"]
        first_load_ms = 1000 * (time.perf_counter() - t)
        page.evaluate("([u, n]) => window.nsynth.checkClips(u, n)", ["check/clips.f32", 1])  # warm-up
        clips = page.evaluate("([u, n]) => window.nsynth.checkClips(u, n)", ["check/clips.f32", len(waves)])
        recording = page.evaluate("u => window.nsynth.checkRecording(u)", "check/recording.f32")
    windows = recording["windows"]
    if [w["start"] for w in windows] != [NUM_SAMPLES / SAMPLE_RATE * k for k in range(len(order))]:
        raise RunError(f"{path}: the page gave windows at {[w['start'] for w in windows]} s, not one per "
                       f"{CLIP_SECONDS} s note")
    return [
        check_row(f"{name} [browser]", "MediaPipe Tasks for Web (wasm) in headless Chromium, one clip per note", path,
                  np.asarray(clips["probs"], np.float32), reference, y, clips["msPerClip"], MEDIAPIPE_THRESHOLD,
                  model_load_ms=round(load_ms, 1), page_ready_ms=round(first_load_ms, 1)),
        check_row(f"{name} [browser windows]", f"the page, {len(order)} notes back to back, {CLIP_SECONDS} s windows",
                  path,
                  np.asarray([w["probs"] for w in windows], np.float32), reference[order], y[order],
                  recording["msPerWindow"], MEDIAPIPE_THRESHOLD, windows=len(windows)),
    ]


# MediaPipe runs the same TFLite kernels (XNNPACK) as LiteRT: the same top-1 on every note.
MEDIAPIPE_THRESHOLD = (1.00, 1e-3)


def mediapipe_options(path: str, **kwargs) -> mp_audio.AudioClassifierOptions:
    read_metadata(path)  # one clear error for a model without TFLite Metadata
    return mp_audio.AudioClassifierOptions(base_options=mp_tasks.BaseOptions(model_asset_path=path), **kwargs)


def mediapipe_classifier(options: mp_audio.AudioClassifierOptions) -> mp_audio.AudioClassifier:
    """MediaPipe's AudioClassifier; its C++ start-up log (no GPU, no EGL) silenced."""
    with native_stderr_silenced():
        return mp_audio.AudioClassifier.create_from_options(options)


def mediapipe_probs(result) -> np.ndarray:
    """An AudioClassifierResult -> probabilities [11] in family order."""
    probs = np.zeros(len(FAMILIES), np.float32)
    for category in result.classifications[0].categories:
        probs[category.index] = category.score
    return probs


def mediapipe_clips(path: str, waves: np.ndarray) -> tuple[np.ndarray, float]:
    """Probabilities [n, 11] from MediaPipe's AudioClassifier in clip mode, and ms per clip."""
    options = mediapipe_options(path, running_mode=mp_audio.RunningMode.AUDIO_CLIPS)
    probs, t = [], time.perf_counter()
    with mediapipe_classifier(options) as classifier:
        for wave in waves:
            [result] = classifier.classify(mp_audio_data.AudioData.create_from_array(wave.astype(np.float64),
                                                                                    SAMPLE_RATE))
            probs.append(mediapipe_probs(result))
    return np.stack(probs), 1000 * (time.perf_counter() - t) / max(len(waves), 1)


def mediapipe_stream(path: str, recording: np.ndarray, chunk_seconds: float = 1.0) -> list[tuple[float, np.ndarray]]:
    """(window start in s, probabilities) from MediaPipe's AudioClassifier in stream mode, fed in chunks
    as a microphone would: one result per full 4 s window."""
    windows: list[tuple[float, np.ndarray]] = []
    options = mediapipe_options(path, running_mode=mp_audio.RunningMode.AUDIO_STREAM,
                                result_callback=lambda result, ms: windows.append((ms / 1000, mediapipe_probs(result))))
    chunk = int(chunk_seconds * SAMPLE_RATE)
    with mediapipe_classifier(options) as classifier:
        for start in range(0, len(recording), chunk):
            data = mp_audio_data.AudioData.create_from_array(recording[start : start + chunk].astype(np.float64),
                                                            SAMPLE_RATE)
            classifier.classify_async(data, start * 1000 // SAMPLE_RATE)
    return sorted(windows, key=lambda w: w[0])


def litert_version() -> str:
    return getattr(ai_edge_litert, "__version__", "?")


def format_check_table(rows: list[dict]) -> str:
    head = f"{'model':<42}{'KiB':>8}{'notes':>7}{'agree':>8}{'max|dp|':>10}{'acc':>7}{'ms/clip':>9}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        rule = f">={r['threshold_agreement']:.0%}" + (f", <={r['threshold_max_abs_diff']:g}"
                                                      if r["threshold_max_abs_diff"] else "")
        lines.append(f"{r['model']:<42}{r['size_kib']:>8.1f}{r.get('notes', 0):>7}{r['agreement']:>8.3f}"
                     f"{r['max_abs_diff']:>10.2e}"
                     f"{r['accuracy']:>7.3f}{r['latency_ms']:>9.3f}  {'ok' if r['passed'] else 'FAIL'} ({rule})")
    return "\n".join(lines)
