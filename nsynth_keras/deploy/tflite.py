"""SavedModel and TFLite export: the export formats (fp32, fp16, dynamic-range int8, full int8, and a
raw-waveform model with the log-mel frontend inside), each with TFLite Metadata (labels, input
description, AudioProperties for the waveform model). The on-device check is in ondevice.py."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_fb
from mediapipe.tasks.python.metadata import metadata
from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer

from nsynth_keras import __version__
from nsynth_keras.core.config import (
    CLIP_SECONDS,
    F_MAX,
    F_MIN,
    FAMILIES,
    N_FRAMES,
    N_MELS,
    NUM_CLASSES,
    NUM_SAMPLES,
    SAMPLE_RATE,
    TOP_DB,
)
from nsynth_keras.core.files import atomic_path, first_line, write_bytes, write_labels
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.features import DEFAULT_FRONTEND, Frontend, LogMel
from nsynth_keras.data.pipeline import split_features
from nsynth_keras.models.runs import RunError, RunFolder, find_model, load_keras, run_frontend, takes_waveform

REPRESENTATIVE_NOTES = 200
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp: the same model gives the same bytes


def write_savedmodel(model: keras.Model, path: str) -> None:
    """model.export with the endpoint named `serve` (also the serving_default signature)."""
    with atomic_path(path, folder=True) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)


def waveform_model(model: keras.Model, frontend: Frontend = DEFAULT_FRONTEND) -> keras.Model:
    """Raw 16 kHz audio [1, 64000] -> family probabilities, with the frontend (the run's) in the graph.

    The batch is fixed at 1: a dynamic batch makes the converter emit a Flex op for the
    STFT framing that the TFLite interpreters cannot run.
    """
    audio = keras.Input(shape=(NUM_SAMPLES,), batch_size=1, name="waveform")
    if takes_waveform(model):  # an ensemble of members with different frontends: they are inside already
        return keras.Model(audio, model(audio), name="waveform_classifier")
    frontend_layer = LogMel(frontend.to_json(), name="log_mel_frontend")
    return keras.Model(audio, model(frontend_layer(audio)), name="waveform_classifier")


@dataclass(frozen=True)
class ExportFormat:
    """A TFLite export format: how it sets the converter, and what the on-device check asks of it."""

    configure: Callable[[tf.lite.TFLiteConverter, np.ndarray | None], None]
    agreement: float  # minimum top-1 agreement with the Keras model (ondevice.check_run)
    max_diff: float | None = None  # and max |probability difference|, where one is promised
    waveform: bool = False  # raw audio in, the log-mel frontend inside
    representative: bool = False  # calibrated on log-mels of real training notes


# export --variants NAME -> ExportFormat, in export order; the file is RunFolder.tflite_file(NAME).
# Adding a format: a configure function and the @export_format decorator.
EXPORT_FORMATS: dict[str, ExportFormat] = {}


def export_format(name: str, agreement: float, max_diff: float | None = None, **kwargs):
    def register(configure):
        EXPORT_FORMATS[name] = ExportFormat(configure, agreement, max_diff, **kwargs)
        return configure

    return register


@export_format("fp32", agreement=1.00, max_diff=1e-4)
def fp32(converter, representative) -> None:
    """The float32 model as it is."""


@export_format("fp16", agreement=0.99)
def fp16(converter, representative) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


@export_format("dynamic_int8", agreement=0.97)
def dynamic_int8(converter, representative) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


@export_format("int8", agreement=0.97, representative=True)
def int8(converter, representative) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in representative)
    # Integer-only kernels inside; float32 input and output so callers need no scales.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


@export_format("waveform", agreement=1.00, max_diff=1e-3, waveform=True)  # TFLite vs TF frontend kernels
def waveform(converter, representative) -> None:
    """float32, with the frontend inside (waveform_model)."""


def variant_files() -> dict[str, str]:
    """Export format -> its file in a run folder."""
    return {name: RunFolder.tflite_file(name) for name in EXPORT_FORMATS}


def to_tflite(model: keras.Model, variant: str, representative: np.ndarray | None = None,
              frontend: Frontend = DEFAULT_FRONTEND) -> bytes:
    """Convert a float32 Keras model; `representative` (log-mels) is needed for int8; `frontend`: the run's, for
    the waveform model."""
    if variant not in EXPORT_FORMATS:
        raise ValueError(f"unknown TFLite variant {variant!r}; choose from {', '.join(EXPORT_FORMATS)}")
    fmt = EXPORT_FORMATS[variant]
    if fmt.representative and representative is None:
        raise ValueError(f"the {variant} model needs representative log-mels of real training notes")
    converter = tf.lite.TFLiteConverter.from_keras_model(waveform_model(model, frontend) if fmt.waveform else model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    fmt.configure(converter, representative)
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
        description=f"Names the instrument family ({NUM_CLASSES} NSynth families) of one isolated "
                    f"{CLIP_SECONDS}-second note at {SAMPLE_RATE // 1000} kHz. A CNN trained on NSynth (Engel et al. "
                    "2017) with nsynth-keras.",
        author="nsynth-keras",
        licenses="Apache-2.0 (model); trained on NSynth notes, CC BY 4.0",
    )
    if EXPORT_FORMATS[variant].waveform:
        tensor = AudioTensorMd("waveform", f"raw mono float audio at {SAMPLE_RATE} Hz in [-1, 1], [1, {NUM_SAMPLES}] "
                               f"({CLIP_SECONDS} s); the log-mel frontend is inside the model", SAMPLE_RATE, 1)
    else:
        tensor = metadata_info.TensorMd(
            name="log_mel", min_values=[-1.0], max_values=[1.0],
            description=f"log-mel spectrogram [n, {N_FRAMES}, {N_MELS}, 1] of a {CLIP_SECONDS} s {SAMPLE_RATE} Hz "
                        "note: "
                        f"{N_FRAMES} frames x {N_MELS} mel bands ({F_MIN:.0f} Hz-{F_MAX / 1000:.0f} kHz), dB re the "
                        f"note's peak floored at -{TOP_DB:.0f} dB and scaled to [-1, 1] "
                        "(nsynth_keras.data.features.log_mel)")
    return general, tensor


class FullMetadataWriter(metadata_writer.MetadataWriter):
    """MediaPipe's writer with two more add_* methods. Its public API (mediapipe 0.10.21) sets a model's name and
    description only (add_general_info) and an input's name and description only (add_feature_input): no version,
    author or licence, no audio sample rate. These set the same two fields its own add_* methods set."""

    def add_general_md(self, general: metadata_info.GeneralMd) -> FullMetadataWriter:
        self._general_md = general
        return self

    def add_input_md(self, tensor: metadata_info.TensorMd) -> FullMetadataWriter:
        self._input_mds.append(tensor)
        return self


def add_metadata(flatbuffer: bytes, variant: str) -> bytes:
    """TFLite Metadata written by MediaPipe's metadata writer: general info, the input (AudioProperties
    for the waveform model) and the output `family` with the 11 labels as TENSOR_AXIS_LABELS."""
    writer = FullMetadataWriter.create(bytearray(flatbuffer))
    general, tensor = model_metadata(variant)
    writer.add_general_md(general).add_input_md(tensor)
    writer.add_classification_output(metadata_writer.Labels().add(list(FAMILIES)), name="family",
                                     description="probability of each instrument family")
    with native_stderr_silenced():
        model, _ = writer.populate()
    return fixed_zip_dates(bytes(model))  # the writer's own __del__ removes its temporary label file


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


def write_tflite(model: keras.Model, variant: str, path: str, representative: np.ndarray | None = None,
                 frontend: Frontend = DEFAULT_FRONTEND) -> None:
    write_bytes(path, to_tflite(model, variant, representative, frontend))


def representative_features(spec: DataSpec, n: int = REPRESENTATIVE_NOTES, seed: int = 0,
                            frontend: Frontend = DEFAULT_FRONTEND) -> np.ndarray:
    """Features (by the run's ``frontend``) of up to n real training notes (a seeded sample across families)."""
    spec = dataclasses.replace(spec, filters=dataclasses.replace(spec.filters, max_examples=n))
    ds, _ = split_features(spec, "train", 64, seed=seed, frontend=frontend)
    return np.concatenate([x.numpy() for x, _ in ds])


def export_run(run_dir: str, spec: DataSpec | None = None, variants: tuple[str, ...] | None = None,
               log=print) -> dict[str, str]:
    """Write the SavedModel and the TFLite variants into a run folder; return name -> path."""
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: export takes a run folder (the folder that holds {RunFolder.MODEL}), "
                       "not a file")
    run = RunFolder(run_dir)
    model = load_keras(find_model(run_dir))
    frontend, _ = run_frontend(run_dir)
    written = {}
    t = time.time()
    write_savedmodel(model, run.saved_model)
    written["saved_model"] = run.saved_model
    log(f"  {RunFolder.SAVED_MODEL + '/':<24}({time.time() - t:.1f} s)")
    if takes_waveform(model):
        # Its frontends are inside (an ensemble of members with different frontends): only the waveform format
        # has an audio input.
        other = [v for v in variants or () if not EXPORT_FORMATS[v].waveform]
        if other:
            raise RunError(f"{run_dir}: this model takes 16 kHz audio (its frontends are inside), so it exports only "
                           f"as the waveform variant, not {', '.join(other)}")
        variants = tuple(v for v, fmt in EXPORT_FORMATS.items() if fmt.waveform)
    variants = tuple(EXPORT_FORMATS) if variants is None else variants
    representative = None
    if any(EXPORT_FORMATS[v].representative for v in variants):
        if spec is None:
            raise ValueError("the int8 model needs --data-dir for representative training notes")
        representative = representative_features(spec, frontend=frontend)
    for variant in variants:
        t = time.time()
        path = run.file(RunFolder.tflite_file(variant))
        write_tflite(model, variant, path, representative, frontend)
        written[variant] = path
        log(f"  {RunFolder.tflite_file(variant):<24}{os.path.getsize(path) / 1024:8.1f} KiB ({time.time() - t:.1f} s)")
    write_labels(run.labels)
    return written
