"""Export a trained run: SavedModel and TFLite variants (fp32, fp16, dynamic-range int8,
full int8, and a raw-waveform model with the log-mel frontend inside), labels attached.

    python -m nsynth_keras.export saved_models/<run> --data-dir ../shared/nsynth
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf

from nsynth_keras.config import FAMILIES, NUM_SAMPLES
from nsynth_keras.features import LogMel

# file name -> what it is; model.tflite (written by train) is the same fp32 model.
VARIANTS = {
    "fp32": "model_fp32.tflite",
    "fp16": "model_fp16.tflite",
    "dynamic_int8": "model_dynamic_int8.tflite",
    "int8": "model_int8.tflite",
    "waveform": "model_waveform.tflite",
}
REPRESENTATIVE_NOTES = 200


def write_savedmodel(model: keras.Model, path: str) -> None:
    """model.export with the endpoint named `serve` (also the serving_default signature)."""
    from nsynth_keras.runs import atomic_path

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
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints the whole trace signature
        flatbuffer = converter.convert()
    return attach_labels(flatbuffer)


def attach_labels(flatbuffer: bytes) -> bytes:
    """Pack labels.txt into the model as TFLite metadata does with associated files:
    a zip appended to the flatbuffer, which the interpreter ignores."""
    buf = io.BytesIO(flatbuffer)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("labels.txt", "\n".join(FAMILIES) + "\n")
    return buf.getvalue()


def read_labels(path: str) -> list[str]:
    """The labels packed in a .tflite by attach_labels."""
    with zipfile.ZipFile(path) as zf:
        return zf.read("labels.txt").decode().split()


def write_bytes(path: str, data: bytes) -> None:
    from nsynth_keras.runs import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def representative_features(spec, n: int = REPRESENTATIVE_NOTES, seed: int = 0) -> np.ndarray:
    """Log-mels of up to n real training notes (a seeded sample across families)."""
    from dataclasses import replace

    from nsynth_keras.pipeline import split_features

    spec = replace(spec, filters=replace(spec.filters, max_examples=n))
    ds, _ = split_features(spec, "train", 64, seed=seed)
    return np.concatenate([x.numpy() for x, _ in ds])


def export_run(run_dir: str, spec=None, variants=tuple(VARIANTS), log=print) -> dict[str, str]:
    """Write the SavedModel and the TFLite variants into a run folder; return name -> path."""
    from nsynth_keras.runs import find_model, load_keras, write_labels

    model = load_keras(find_model(run_dir))
    written = {}
    t = time.time()
    write_savedmodel(model, os.path.join(run_dir, "saved_model"))
    written["saved_model"] = os.path.join(run_dir, "saved_model")
    log(f"  saved_model/            ({time.time() - t:.1f} s)")
    representative = None
    if "int8" in variants:
        if spec is None:
            raise ValueError("the int8 model needs --data-dir for representative training notes")
        representative = representative_features(spec)
    for variant in variants:
        t = time.time()
        path = os.path.join(run_dir, VARIANTS[variant])
        write_bytes(path, to_tflite(model, variant, representative))
        written[variant] = path
        log(f"  {VARIANTS[variant]:<24}{os.path.getsize(path) / 1024:8.1f} KiB ({time.time() - t:.1f} s)")
    write_labels(os.path.join(run_dir, "labels.txt"))
    return written


def main(argv: list[str] | None = None) -> int:
    from nsynth_keras.data import DataError, add_data_args, spec_from_args
    from nsynth_keras.runs import RunError

    parser = argparse.ArgumentParser(
        prog="python -m nsynth_keras.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="run folder written by nsynth_keras.train")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS),
                        help="TFLite variants to write (default: all)")
    add_data_args(parser)
    args = parser.parse_args(argv)
    try:
        print(f"Exporting {args.run}")
        export_run(args.run, spec_from_args(args), tuple(args.variants))
    except (RunError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Labels: {os.path.join(args.run, 'labels.txt')} (also packed inside every .tflite)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
