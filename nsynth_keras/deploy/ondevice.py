"""The on-device check: every exported .tflite against the Keras model on real notes, in the LiteRT
interpreter and, for waveform models, in MediaPipe's AudioClassifier (clip and stream mode)."""

from __future__ import annotations

import contextlib
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
from nsynth_keras.data.pipeline import eval_dataset
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
    ``browser`` in the demo page's MediaPipe Tasks for Web in headless Chromium.

    The split streams through in batches: what is kept is each model's probabilities and the first note of
    each family, so memory does not grow with the split."""
    keras_path, models = models_to_check(run)
    frontend, _ = run_frontend(keras_path)  # the features the run's log-mel models were trained on
    tflites = {path: TFLiteClassifier(path) for path in models}
    waveform = [path for path, clf in tflites.items() if clf.takes_waveform]
    if browser and not waveform:
        raise RunError(f"{run}: --browser checks model_waveform.tflite, and there is none: run "
                       "python -m nsynth_keras.export first")
    keras_clf = KerasClassifier(keras_path)
    reference, ys, first = [], [], {}  # first: family -> its first note's waveform
    probs = {path: [] for path in models}
    latency = {}
    with contextlib.ExitStack() as stack:
        clips = {path: stack.enter_context(MediaPipeClips(path)) for path in waveform} if mediapipe else {}
        pages = {path: stack.enter_context(BrowserCheck(path)) for path in waveform} if browser else {}
        for batch in eval_dataset(spec, split, frontend=frontend):
            waves, mels, y = batch["audio"].numpy(), batch["mel"].numpy(), batch["family"].numpy()
            reference.append(keras_clf.predict(waves if keras_clf.takes_waveform else mels))
            ys.append(y)
            for wave, family in zip(waves, y):
                first.setdefault(int(family), wave)
            for path, clf in tflites.items():
                x = waves if clf.takes_waveform else mels
                if path not in latency:
                    latency[path] = single_clip_latency_ms(clf, x)
                probs[path].append(clf.predict(x))
            for checker in (*clips.values(), *pages.values()):
                checker.add(waves)
        if not ys:
            raise RunError(f"no notes to check in the {split} split of {spec.data_dir}")
        reference, y = np.concatenate(reference), np.concatenate(ys)
        order = sorted(first)  # one note per family, in family order
        recording = np.concatenate([first[f] for f in order])
        at_first = [int(np.flatnonzero(y == f)[0]) for f in order]
        rows = []
        for path in models:
            name = os.path.basename(path)
            rows.append(check_row(name, INPUTS[tflites[path].takes_waveform], path, np.concatenate(probs[path]),
                                  reference, y, latency[path], threshold(name)))
            if path in clips:
                rows.append(check_row(f"{name} [MediaPipe clips]", f"AudioClassifier, one {CLIP_SECONDS} s clip per "
                                      "note", path, clips[path].probs(), reference, y, clips[path].ms_per_clip(),
                                      MEDIAPIPE_THRESHOLD))
                t = time.perf_counter()
                windows = mediapipe_stream(path, recording)
                ms = 1000 * (time.perf_counter() - t) / max(len(windows), 1)
                check_windows(path, "MediaPipe stream mode", [start for start, _ in windows], len(order))
                rows.append(check_row(f"{name} [MediaPipe stream]", f"AudioClassifier stream, {len(order)} notes back "
                                      "to back, 1 s chunks", path, np.stack([p for _, p in windows]),
                                      reference[at_first], y[at_first], ms, MEDIAPIPE_THRESHOLD,
                                      windows=len(windows)))
            if path in pages:
                rows += pages[path].rows(recording, reference, y, at_first, len(order))
    return rows


def check_windows(path: str, where: str, starts: list[float], notes: int) -> None:
    """A back-to-back recording of ``notes`` notes must give one window per note, at each note's start."""
    if starts != [NUM_SAMPLES / SAMPLE_RATE * k for k in range(notes)]:
        raise RunError(f"{path}: {where} gave windows at {starts} s, not one per {CLIP_SECONDS} s note")


class MediaPipeClips:
    """MediaPipe's AudioClassifier in clip mode, fed a split batch by batch."""

    def __init__(self, path: str):
        self.path, self.parts, self.seconds, self.count = path, [], 0.0, 0

    def __enter__(self):
        options = mediapipe_options(self.path, running_mode=mp_audio.RunningMode.AUDIO_CLIPS)
        self.classifier = mediapipe_classifier(options)
        return self

    def __exit__(self, *exc):
        self.classifier.close()

    def add(self, waves: np.ndarray) -> None:
        t = time.perf_counter()
        for wave in waves:
            [result] = self.classifier.classify(mp_audio_data.AudioData.create_from_array(wave.astype(np.float64),
                                                                                         SAMPLE_RATE))
            self.parts.append(mediapipe_probs(result))
        self.seconds += time.perf_counter() - t
        self.count += len(waves)

    def probs(self) -> np.ndarray:
        return np.stack(self.parts)

    def ms_per_clip(self) -> float:
        return 1000 * self.seconds / max(self.count, 1)


class BrowserCheck:
    """The demo page's own classifier (MediaPipe Tasks for Web, WebAssembly) in headless Chromium, fed a split
    batch by batch as clips; then one note per family back to back as 4 s windows."""

    def __init__(self, path: str):
        self.path, self.memory, self.parts, self.seconds, self.count = path, {}, [], 0.0, 0

    def __enter__(self):
        from nsynth_keras.deploy.webpage import headless_page, serve, wait_until_ready

        self.stack = contextlib.ExitStack()
        url = self.stack.enter_context(serve(self.path, memory=self.memory))
        self.page = self.stack.enter_context(headless_page(url))
        t = time.perf_counter()
        self.load_ms = wait_until_ready(self.page)["loadMs"]
        self.ready_ms = 1000 * (time.perf_counter() - t)
        return self

    def __exit__(self, *exc):
        self.stack.close()

    def add(self, waves: np.ndarray) -> None:
        name = f"clips-{self.count}.f32"  # a new name for every batch: the page may cache a URL it fetched
        self.memory.clear()
        self.memory[name] = waves.astype("<f4").tobytes()
        if not self.count:
            self.page.evaluate("([u, n]) => window.nsynth.checkClips(u, n)", [f"check/{name}", 1])  # warm-up
        clips = self.page.evaluate("([u, n]) => window.nsynth.checkClips(u, n)", [f"check/{name}", len(waves)])
        self.parts.append(np.asarray(clips["probs"], np.float32))
        self.seconds += clips["msPerClip"] * len(waves) / 1000
        self.count += len(waves)

    def rows(self, recording: np.ndarray, reference: np.ndarray, y: np.ndarray, at_first: list[int],
             notes: int) -> list[dict]:
        self.memory.clear()
        self.memory["recording.f32"] = recording.astype("<f4").tobytes()
        result = self.page.evaluate("u => window.nsynth.checkRecording(u)", "check/recording.f32")
        windows = result["windows"]
        check_windows(self.path, "the page", [w["start"] for w in windows], notes)
        name = os.path.basename(self.path)
        return [
            check_row(f"{name} [browser]", "MediaPipe Tasks for Web (wasm) in headless Chromium, one clip per note",
                      self.path, np.concatenate(self.parts), reference, y, 1000 * self.seconds / max(self.count, 1),
                      MEDIAPIPE_THRESHOLD, model_load_ms=round(self.load_ms, 1),
                      page_ready_ms=round(self.ready_ms, 1)),
            check_row(f"{name} [browser windows]", f"the page, {notes} notes back to back, {CLIP_SECONDS} s windows",
                      self.path, np.asarray([w["probs"] for w in windows], np.float32), reference[at_first],
                      y[at_first], result["msPerWindow"], MEDIAPIPE_THRESHOLD, windows=len(windows)),
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
