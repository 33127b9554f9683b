"""One interface over every model format: Keras (.keras), SavedModel and TFLite files."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from nsynth_keras.core.config import FAMILIES, INPUT_SHAPE, NUM_CLASSES, NUM_SAMPLES, SAMPLE_RATE
from nsynth_keras.core.files import first_line
from nsynth_keras.data.audio import (
    Clip,
    Recording,
    recording_windows,
)
from nsynth_keras.data.features import log_mel
from nsynth_keras.models.runs import RunError, find_model, is_saved_model, load_keras, run_frontend

SAVED_MODEL_WARNING = ("a SavedModel folder is a TensorFlow graph: loading it runs its ops, which can read and write "
                       "files, so load only SavedModels you trust")


class Classifier:
    """``predict(x)`` -> probabilities [n, 11]; x is log-mels [n, 64, 64, 1] or,
    where ``takes_waveform``, 16 kHz audio [n, 64000]. Every runtime checks its model's input and
    output shapes when it loads (``check_shapes``), so no model of other classes is read as families."""

    takes_waveform = False
    kind = "?"

    def __init__(self, path: str):
        self.path = path
        # The features a log-mel model was trained on: its run's recorded frontend (the default without one).
        self.frontend, self.frontend_source = run_frontend(path)

    def check_shapes(self, input_shape, output_shape) -> None:
        """Refuse a model whose input is neither a log-mel nor a 4 s waveform, or whose output is not one
        probability per family."""
        def dims(shape) -> tuple | None:
            try:
                return tuple(None if d is None or d < 0 else int(d) for d in shape)
            except TypeError:  # several inputs or outputs: a list of shapes
                return None

        def shown(shape, d: tuple | None) -> str:  # one spelling whatever the runtime: [batch, 64, 64, 1]
            return str(shape) if d is None else "[" + ", ".join("batch" if v is None else str(v) for v in d) + "]"

        given, out = dims(input_shape), dims(output_shape)
        if given is None or given[1:] not in ((NUM_SAMPLES,), INPUT_SHAPE):
            mel = ", ".join(map(str, INPUT_SHAPE))
            raise RunError(f"{self.path}: its input {shown(input_shape, given)} is neither a log-mel [batch, {mel}] "
                           f"nor a 4 s waveform [batch, {NUM_SAMPLES}]: not a model of this project")
        if out is None or len(out) != 2 or out[1] != NUM_CLASSES:
            raise RunError(f"{self.path}: its output {shown(output_shape, out)} is not one probability for each of the "
                           f"{NUM_CLASSES} families ({', '.join(FAMILIES)}): not a model of this project")
        self.takes_waveform = given[1:] == (NUM_SAMPLES,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        probs = np.asarray(self._predict(x), np.float32)
        if probs.shape != (len(x), NUM_CLASSES):
            raise RunError(f"{self.path}: returned shape {probs.shape} for {len(x)} inputs")
        return probs

    def _predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def non_finite(probs: np.ndarray) -> np.ndarray:
    """Which rows of probabilities hold a NaN or an infinity: the one check before any of them is shown."""
    return ~np.isfinite(np.asarray(probs)).all(axis=-1)


class KerasClassifier(Classifier):
    kind = "keras"

    def __init__(self, path: str):
        super().__init__(path)
        self.model = load_keras(path)
        self.check_shapes(self.model.input_shape, self.model.output_shape)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(x))


class SavedModelClassifier(Classifier):
    kind = "saved_model"

    def __init__(self, path: str):
        super().__init__(path)
        try:
            self.model = tf.saved_model.load(path)
            self.fn = self.model.serve
            concrete = self.fn.get_concrete_function() if hasattr(self.fn, "get_concrete_function") else self.fn
            input_shape = concrete.structured_input_signature[0][0].shape.as_list()
            output_shape = concrete.structured_outputs.shape.as_list()
        except Exception as err:
            raise RunError(f"{path}: cannot load the SavedModel's serve endpoint ({first_line(err)})") from None
        self.check_shapes(input_shape, output_shape)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.fn(np.asarray(x, np.float32)).numpy()


class TFLiteClassifier(Classifier):
    """The standalone LiteRT interpreter; a fixed-batch model is run one clip at a time."""

    kind = "tflite"

    def __init__(self, path: str, num_threads: int | None = None):
        super().__init__(path)
        if not os.path.isfile(path):
            raise RunError(f"{path}: TFLite model not found")
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise RunError(f"{path}: not a valid TFLite model ({first_line(err)})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.check_shapes(self.input["shape_signature"], self.output["shape_signature"])
        self.dynamic_batch = int(self.input["shape_signature"][0]) == -1
        self.batch = 1

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.dynamic_batch and x.shape[0] != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], x.shape)
            self.interpreter.allocate_tensors()
            self.batch = x.shape[0]
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).astype(np.float32)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.dynamic_batch:
            return self._run(x)
        return np.concatenate([self._run(x[i : i + 1]) for i in range(x.shape[0])]) if len(x) else \
            np.zeros((0, NUM_CLASSES), np.float32)


def load_classifier(model: str, trust_saved_model: bool = False) -> Classifier:
    """A run folder (its model.keras), a .keras or .tflite file, or (only if trusted) a SavedModel folder."""
    if is_saved_model(model):
        if not trust_saved_model:
            raise RunError(f"{model}: {SAVED_MODEL_WARNING}. Use the run's model.keras or a .tflite file, "
                           "or pass --trust-saved-model")
        return SavedModelClassifier(model)
    path = find_model(model)
    return TFLiteClassifier(path) if path.endswith(".tflite") else KerasClassifier(path)


def predict_clips(clf: Classifier, clips: list[Clip]) -> np.ndarray:
    """Probabilities [n, 11] for decoded clips."""
    return predict_waveforms(clf, np.stack([c.waveform for c in clips]) if clips else np.zeros((0, NUM_SAMPLES)))


def predict_waveforms(clf: Classifier, waves: np.ndarray) -> np.ndarray:
    """Probabilities [n, 11] for 4 s waveforms [n, 64000] at 16 kHz: the model's own input (its run's log-mel)."""
    if not len(waves):
        return np.zeros((0, NUM_CLASSES), np.float32)
    x = waves if clf.takes_waveform else log_mel(np.asarray(waves, np.float32), clf.frontend).numpy()
    return clf.predict(x)


def top_k(probs: np.ndarray, k: int) -> list[tuple[str, float]]:
    order = np.argsort(probs)[::-1][:k]
    return [(FAMILIES[i], float(probs[i])) for i in order]


def predict_windows(clf: Classifier, rec: Recording, hop_seconds: float,
                    batch: int = 64) -> list[tuple[float, np.ndarray]]:
    """(start in s, probabilities [11]) for each 4 s window of a recording, streamed ``batch`` windows at a time."""
    out = []
    for starts, windows in recording_windows(rec, hop_seconds, batch):
        x = windows if clf.takes_waveform else log_mel(windows, clf.frontend).numpy()
        out += [(s / SAMPLE_RATE, p) for s, p in zip(starts, clf.predict(x))]
    return out
