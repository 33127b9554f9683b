"""One interface over every model format: Keras (.keras), SavedModel and TFLite files."""

from __future__ import annotations

import os

import numpy as np

from nsynth_keras.config import INPUT_SHAPE, NUM_CLASSES, NUM_SAMPLES
from nsynth_keras.runs import RunError, find_model, load_keras


class Classifier:
    """``predict(x)`` -> probabilities [n, 11]; x is log-mels [n, 64, 64, 1] or,
    where ``takes_waveform``, 16 kHz audio [n, 64000]."""

    takes_waveform = False
    kind = "?"

    def __init__(self, path: str):
        self.path = path

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class KerasClassifier(Classifier):
    kind = "keras"

    def __init__(self, path: str):
        super().__init__(path)
        self.model = load_keras(path)
        self.takes_waveform = tuple(self.model.input_shape[1:]) == (NUM_SAMPLES,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(x))


class SavedModelClassifier(Classifier):
    kind = "saved_model"

    def __init__(self, path: str):
        import tensorflow as tf

        super().__init__(path)
        try:
            self.model = tf.saved_model.load(path)
            self.fn = self.model.serve
        except Exception as err:
            raise RunError(f"{path}: cannot load the SavedModel ({str(err).splitlines()[0][:200]})") from None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.fn(np.asarray(x, np.float32)).numpy()


class TFLiteClassifier(Classifier):
    """The standalone LiteRT interpreter; a fixed-batch model is run one clip at a time."""

    kind = "tflite"

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(path)
        if not os.path.isfile(path):
            raise RunError(f"{path}: TFLite model not found")
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise RunError(f"{path}: not a valid TFLite model ({str(err).splitlines()[0][:200]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = tuple(self.input["shape"][1:])
        if shape not in ((NUM_SAMPLES,), INPUT_SHAPE):
            raise RunError(f"{path}: input shape {tuple(self.input['shape'])} is not log-mel or waveform")
        self.takes_waveform = shape == (NUM_SAMPLES,)
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

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.dynamic_batch:
            return self._run(x)
        return np.concatenate([self._run(x[i : i + 1]) for i in range(x.shape[0])]) if len(x) else \
            np.zeros((0, NUM_CLASSES), np.float32)


def load_classifier(model: str) -> Classifier:
    """A run folder (its model.keras), a .keras or .tflite file, or a SavedModel folder."""
    if os.path.isdir(model) and os.path.isfile(os.path.join(model, "saved_model.pb")):
        return SavedModelClassifier(model)
    path = find_model(model)
    return TFLiteClassifier(path) if path.endswith(".tflite") else KerasClassifier(path)
