"""SavedModel and TFLite conversion (fp32, fp16, dynamic-range int8, full int8, and a raw-waveform
model with the log-mel frontend inside), labels attached; and the on-device check against Keras."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import os
import sys
import time
import zipfile

import ai_edge_litert
import keras
import numpy as np
import tensorflow as tf

from nsynth_keras.config import FAMILIES, NUM_SAMPLES
from nsynth_keras.data import DataSpec
from nsynth_keras.features import LogMel
from nsynth_keras.inference import KerasClassifier, TFLiteClassifier
from nsynth_keras.pipeline import load_split, split_features
from nsynth_keras.runs import RunError, RunFolder, atomic_path, find_model, load_keras, write_bytes, write_labels

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
    return attach_labels(flatbuffer)


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


def attach_labels(flatbuffer: bytes) -> bytes:
    """Pack labels.txt into the model as TFLite metadata does with associated files:
    a zip appended to the flatbuffer, which the interpreter ignores."""
    buf = io.BytesIO(flatbuffer)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(zipfile.ZipInfo(RunFolder.LABELS, date_time=ZIP_DATE), "\n".join(FAMILIES) + "\n")
    return buf.getvalue()


def read_labels(path: str) -> list[str]:
    """The labels packed in a .tflite by attach_labels."""
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


def check_run(run: str, spec: DataSpec, split: str) -> list[dict]:
    keras_path, models = models_to_check(run)
    notes = load_split(spec, split, ("audio", "mel", "family"))
    waves, mels, y = notes["audio"], notes["mel"], notes["family"]
    reference = KerasClassifier(keras_path).predict(mels)
    rows = []
    for path in models:
        clf = TFLiteClassifier(path)
        x = waves if clf.takes_waveform else mels
        probs = clf.predict(x)
        name = os.path.basename(path)
        min_agree, max_diff = THRESHOLDS.get(name, DEFAULT_THRESHOLD)
        row = {
            "model": name,
            "input": "waveform [1, 64000]" if clf.takes_waveform else "log-mel [n, 64, 64, 1]",
            "size_kib": round(os.path.getsize(path) / 1024, 1),
            "agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(probs - reference).max()),
            "accuracy": float((probs.argmax(1) == y).mean()),
            "latency_ms": round(single_clip_latency_ms(clf, x), 3),
            "threshold_agreement": min_agree,
            "threshold_max_abs_diff": max_diff,
        }
        row["passed"] = row["agreement"] >= min_agree and (max_diff is None or row["max_abs_diff"] <= max_diff)
        rows.append(row)
    return rows


def litert_version() -> str:
    return getattr(ai_edge_litert, "__version__", "?")


def format_check_table(rows: list[dict]) -> str:
    head = f"{'model':<27}{'KiB':>8}{'agree':>8}{'max|dp|':>10}{'acc':>7}{'ms/clip':>9}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        rule = f">={r['threshold_agreement']:.0%}" + (f", <={r['threshold_max_abs_diff']:g}"
                                                      if r["threshold_max_abs_diff"] else "")
        lines.append(f"{r['model']:<27}{r['size_kib']:>8.1f}{r['agreement']:>8.3f}{r['max_abs_diff']:>10.2e}"
                     f"{r['accuracy']:>7.3f}{r['latency_ms']:>9.3f}  {'ok' if r['passed'] else 'FAIL'} ({rule})")
    return "\n".join(lines)
