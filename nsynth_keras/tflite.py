"""SavedModel and TFLite conversion (fp32, fp16, dynamic-range int8, full int8, and a raw-waveform
model with the log-mel frontend inside), each with TFLite Metadata (labels, input description,
AudioProperties for the waveform model); and the on-device check against Keras, in the LiteRT
interpreter and in MediaPipe's AudioClassifier."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import json
import os
import sys
import time
import zipfile

import ai_edge_litert
import keras
import numpy as np
import tensorflow as tf
from mediapipe.tasks import python as mp_tasks
from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_fb
from mediapipe.tasks.python import audio as mp_audio
from mediapipe.tasks.python.components.containers import audio_data as mp_audio_data
from mediapipe.tasks.python.metadata import metadata
from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer

from nsynth_keras import __version__
from nsynth_keras.config import F_MAX, F_MIN, FAMILIES, N_FRAMES, N_MELS, NUM_SAMPLES, SAMPLE_RATE
from nsynth_keras.data import DataSpec
from nsynth_keras.features import LogMel
from nsynth_keras.inference import KerasClassifier, TFLiteClassifier
from nsynth_keras.pipeline import load_split, split_features
from nsynth_keras.runs import (
    RunError,
    RunFolder,
    atomic_path,
    find_model,
    first_line,
    load_keras,
    write_bytes,
    write_labels,
)

VARIANTS = RunFolder.TFLITE_VARIANTS
REPRESENTATIVE_NOTES = 200
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp: the same model gives the same bytes


def write_savedmodel(model: keras.Model, path: str) -> None:
    """model.export with the endpoint named `serve` (also the serving_default signature)."""
    with atomic_path(path) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)


def waveform_model(model: keras.Model) -> keras.Model:
    """Raw 16 kHz audio [1, 64000] -> family probabilities, with the frontend in the graph.

    The batch is fixed at 1: a dynamic batch makes the converter emit a Flex op for the
    STFT framing that the TFLite interpreters cannot run.
    """
    audio = keras.Input(shape=(NUM_SAMPLES,), batch_size=1, name="waveform")
    return keras.Model(audio, model(LogMel(name="log_mel_frontend")(audio)), name="waveform_classifier")


def to_tflite(model: keras.Model, variant: str, representative: np.ndarray | None = None) -> bytes:
    """Convert a float32 Keras model; `representative` (log-mels) is needed for int8."""
    keras_model = waveform_model(model) if variant == "waveform" else model
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if representative is None:
            raise ValueError("the int8 model needs representative log-mels of real training notes")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in representative)
        # Integer-only kernels inside; float32 input and output so callers need no scales.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif variant not in ("fp32", "waveform"):
        raise ValueError(f"unknown TFLite variant {variant!r}; choose from {', '.join(VARIANTS)}")
    with contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced():
        flatbuffer = converter.convert()  # prints its trace signature and C++ log lines: noise for a user
    return add_metadata(flatbuffer, variant)


@contextlib.contextmanager
def native_stderr_silenced():
    """Silence what C++ code writes to file descriptor 2 (the converter's absl and MLIR log lines);
    Python exceptions still carry the error."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class AudioTensorMd(metadata_info.TensorMd):
    """An input tensor of raw audio: TFLite Metadata AudioProperties (sample rate, channels), which
    MediaPipe's AudioClassifier reads. MediaPipe's metadata writer has no audio helper."""

    def __init__(self, name: str, description: str, sample_rate: int, channels: int):
        super().__init__(name=name, description=description, content_type=metadata_fb.ContentProperties.AudioProperties)
        self.sample_rate, self.channels = sample_rate, channels

    def create_metadata(self):
        md = super().create_metadata()
        md.content.contentProperties.sampleRate = self.sample_rate
        md.content.contentProperties.channels = self.channels
        return md


def model_metadata(variant: str) -> tuple[metadata_info.GeneralMd, metadata_info.TensorMd]:
    """What a runtime needs to know about a model: name, version, author, licence; its input."""
    general = metadata_info.GeneralMd(
        name=f"NSynth instrument family classifier ({variant})",
        version=__version__,
        description="Names the instrument family (11 NSynth families) of one isolated 4-second note at 16 kHz. "
                    "A CNN trained on NSynth (Engel et al. 2017) with nsynth-keras.",
        author="nsynth-keras",
        licenses="Apache-2.0 (model); trained on NSynth notes, CC BY 4.0",
    )
    if variant == "waveform":
        tensor = AudioTensorMd("waveform", f"raw mono float audio at {SAMPLE_RATE} Hz in [-1, 1], [1, {NUM_SAMPLES}] "
                               "(4 s); the log-mel frontend is inside the model", SAMPLE_RATE, 1)
    else:
        tensor = metadata_info.TensorMd(
            name="log_mel", min_values=[-1.0], max_values=[1.0],
            description=f"log-mel spectrogram [n, {N_FRAMES}, {N_MELS}, 1] of a 4 s {SAMPLE_RATE} Hz note: "
                        f"{N_FRAMES} frames x {N_MELS} mel bands ({F_MIN:.0f} Hz-{F_MAX / 1000:.0f} kHz), dB re the "
                        "note's peak floored at -80 dB and scaled to [-1, 1] (nsynth_keras.features.log_mel)")
    return general, tensor


def add_metadata(flatbuffer: bytes, variant: str) -> bytes:
    """TFLite Metadata written by MediaPipe's metadata writer: general info, the input (AudioProperties
    for the waveform model) and the output `family` with the 11 labels as TENSOR_AXIS_LABELS."""
    writer = metadata_writer.MetadataWriter.create(bytearray(flatbuffer))
    general, tensor = model_metadata(variant)
    writer._general_md = general  # add_general_info() takes only the name and description
    writer._input_mds.append(tensor)
    writer.add_classification_output(metadata_writer.Labels().add(list(FAMILIES)), name="family",
                                     description="probability of each instrument family")
    with native_stderr_silenced():
        model, _ = writer.populate()
    writer._temp_folder.cleanup()
    return fixed_zip_dates(bytes(model))


def fixed_zip_dates(model: bytes) -> bytes:
    """The associated files are a zip appended to the flatbuffer, stamped with the current time:
    rewrite it with a fixed date so that the same model always gives the same bytes."""
    with zipfile.ZipFile(io.BytesIO(model)) as zf:
        start = min(info.header_offset for info in zf.infolist())
        files = [(info.filename, zf.read(info)) for info in zf.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files:
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), data)
    return model[:start] + buf.getvalue()


def read_metadata(path: str) -> dict:
    """A .tflite's TFLite Metadata as a dict (what the MediaPipe displayer shows); RunError without it."""
    try:
        displayer = metadata.MetadataDisplayer.with_model_file(path)
    except ValueError as err:
        raise RunError(f"{path}: no TFLite Metadata ({first_line(err)}); re-export it with "
                       "python -m nsynth_keras.export") from None
    except Exception as err:  # not a flatbuffer at all
        raise RunError(f"{path}: not a valid TFLite model ({first_line(err)})") from None
    return json.loads(displayer.get_metadata_json())


def read_labels(path: str) -> list[str]:
    """The labels file packed in a .tflite (TFLite Metadata associated file)."""
    with zipfile.ZipFile(path) as zf:
        return zf.read(RunFolder.LABELS).decode().split()


def write_tflite(model: keras.Model, variant: str, path: str, representative: np.ndarray | None = None) -> None:
    write_bytes(path, to_tflite(model, variant, representative))


def representative_features(spec: DataSpec, n: int = REPRESENTATIVE_NOTES, seed: int = 0) -> np.ndarray:
    """Log-mels of up to n real training notes (a seeded sample across families)."""
    spec = dataclasses.replace(spec, filters=dataclasses.replace(spec.filters, max_examples=n))
    ds, _ = split_features(spec, "train", 64, seed=seed)
    return np.concatenate([x.numpy() for x, _ in ds])


def export_run(run_dir: str, spec: DataSpec | None = None, variants=tuple(VARIANTS), log=print) -> dict[str, str]:
    """Write the SavedModel and the TFLite variants into a run folder; return name -> path."""
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: export takes a run folder (the folder that holds {RunFolder.MODEL}), "
                       "not a file")
    run = RunFolder(run_dir)
    model = load_keras(find_model(run_dir))
    written = {}
    t = time.time()
    write_savedmodel(model, run.saved_model)
    written["saved_model"] = run.saved_model
    log(f"  {RunFolder.SAVED_MODEL + '/':<24}({time.time() - t:.1f} s)")
    representative = None
    if "int8" in variants:
        if spec is None:
            raise ValueError("the int8 model needs --data-dir for representative training notes")
        representative = representative_features(spec)
    for variant in variants:
        t = time.time()
        path = run.file(VARIANTS[variant])
        write_tflite(model, variant, path, representative)
        written[variant] = path
        log(f"  {VARIANTS[variant]:<24}{os.path.getsize(path) / 1024:8.1f} KiB ({time.time() - t:.1f} s)")
    write_labels(run.labels)
    return written


# --------------------------------------------------------------------------- the on-device check

# Minimum top-1 agreement with the Keras model, and max |prob diff| where one is promised.
THRESHOLDS = {
    RunFolder.TFLITE: (1.00, 1e-4),
    "model_fp32.tflite": (1.00, 1e-4),  # the old name of model.tflite in earlier exports
    VARIANTS["waveform"]: (1.00, 1e-3),  # float32 frontend in TFLite kernels vs TF kernels
    VARIANTS["fp16"]: (0.99, None),
    VARIANTS["dynamic_int8"]: (0.97, None),
    VARIANTS["int8"]: (0.97, None),
}
DEFAULT_THRESHOLD = (0.97, None)
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
        "latency_ms": round(latency_ms, 3), "threshold_agreement": min_agree, "threshold_max_abs_diff": max_diff,
        **extra,
    }
    row["passed"] = row["agreement"] >= min_agree and (max_diff is None or row["max_abs_diff"] <= max_diff)
    return row


def check_run(run: str, spec: DataSpec, split: str, mediapipe: bool = True) -> list[dict]:
    """Every .tflite in the LiteRT interpreter; waveform models also in MediaPipe's AudioClassifier,
    in clip mode (every note) and in stream mode (one note per family, played back to back)."""
    keras_path, models = models_to_check(run)
    notes = load_split(spec, split, ("audio", "mel", "family"))
    waves, mels, y = notes["audio"], notes["mel"], notes["family"]
    reference = KerasClassifier(keras_path).predict(mels)
    rows = []
    for path in models:
        clf = TFLiteClassifier(path)
        x = waves if clf.takes_waveform else mels
        name = os.path.basename(path)
        rows.append(check_row(name, "waveform [1, 64000]" if clf.takes_waveform else "log-mel [n, 64, 64, 1]", path,
                              clf.predict(x), reference, y, single_clip_latency_ms(clf, x),
                              THRESHOLDS.get(name, DEFAULT_THRESHOLD)))
        if mediapipe and clf.takes_waveform:
            probs, ms = mediapipe_clips(path, waves)
            rows.append(check_row(f"{name} [MediaPipe clips]", "AudioClassifier, one 4 s clip per note", path,
                                  probs, reference, y, ms, MEDIAPIPE_THRESHOLD))
            order = [int(np.flatnonzero(y == f)[0]) for f in np.unique(y)]  # one note per family
            t = time.perf_counter()
            windows = mediapipe_stream(path, np.concatenate([waves[i] for i in order]))
            ms = 1000 * (time.perf_counter() - t) / max(len(windows), 1)
            starts = [start for start, _ in windows]
            if starts != [NUM_SAMPLES / SAMPLE_RATE * k for k in range(len(order))]:
                raise RunError(f"{path}: MediaPipe stream mode gave windows at {starts} s, not one per 4 s note")
            rows.append(check_row(f"{name} [MediaPipe stream]", f"AudioClassifier stream, {len(order)} notes back "
                                  "to back, 1 s chunks", path, np.stack([p for _, p in windows]), reference[order],
                                  y[order], ms, MEDIAPIPE_THRESHOLD, windows=len(windows)))
    return rows


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
    head = f"{'model':<42}{'KiB':>8}{'agree':>8}{'max|dp|':>10}{'acc':>7}{'ms/clip':>9}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        rule = f">={r['threshold_agreement']:.0%}" + (f", <={r['threshold_max_abs_diff']:g}"
                                                      if r["threshold_max_abs_diff"] else "")
        lines.append(f"{r['model']:<42}{r['size_kib']:>8.1f}{r['agreement']:>8.3f}{r['max_abs_diff']:>10.2e}"
                     f"{r['accuracy']:>7.3f}{r['latency_ms']:>9.3f}  {'ok' if r['passed'] else 'FAIL'} ({rule})")
    return "\n".join(lines)
