"""The homework CNN and the configurable CNN that train and tune drive."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from nsynth_keras.core.config import INPUT_SHAPE, NUM_CLASSES

# The homework network's convolutions: the defaults of build_cnn and of the train flags.
HOMEWORK = {"filters": (16, 32, 64, 128), "kernel_size": 3, "padding": "same", "strides": 1}


# --model NAME: a function from the training settings (a TrainConfig as a dict) to a built, uncompiled model
# from a [64, 64, 1] log-mel to 11 family probabilities. Adding an architecture: one function with @model_kind
# (its name becomes a --model choice); training, tuning's best-trial rerun and every export build it from here.
MODELS: dict[str, Callable[[dict], keras.Model]] = {}
# name -> a check of the settings that builds nothing (no TensorFlow op may run before a multi-worker strategy
# configures TF's collectives), raising ValueError for settings the model cannot be built from.
CHECKS: dict[str, Callable[[dict], object]] = {}
CNN_ARGS = ("filters", "kernel_size", "padding", "strides", "dropout", "dense_units", "batch_norm", "global_pool",
            "weight_decay")


def model_kind(name: str, check: Callable[[dict], object] | None = None
               ) -> Callable[[Callable[[dict], keras.Model]], Callable[[dict], keras.Model]]:
    def register(fn: Callable[[dict], keras.Model]) -> Callable[[dict], keras.Model]:
        MODELS[name] = fn
        if check is not None:
            CHECKS[name] = check
        return fn

    return register


def check_model_settings(name: str, settings: dict) -> None:
    """Refuse settings model ``name`` cannot be built from, without building it (ValueError)."""
    if name in CHECKS:
        CHECKS[name](settings)


@model_kind("baseline")
def baseline(settings: dict) -> keras.Sequential:
    """The homework network, whatever the architecture flags say."""
    return build_baseline()


@model_kind("cnn", check=lambda s: feature_map_sizes(s["filters"], s["kernel_size"], s["padding"], s["strides"]))
def cnn(settings: dict) -> keras.Sequential:
    """build_cnn configured by the architecture flags (--filters, --kernel-size, ...)."""
    return build_cnn(**{k: settings[k] for k in CNN_ARGS})


def build_baseline() -> keras.Sequential:
    """The homework network: Conv2D 16-32-64-128 3x3 same, ReLU + 2x2 max-pool each, Dense 11."""
    return build_cnn(**HOMEWORK, name="baseline")


def feature_map_sizes(
    filters: tuple[int, ...], kernel_size: int, padding: str, strides: int, size: int = INPUT_SHAPE[0]
) -> list[int]:
    """Side length after each conv + pool block; raise ValueError if one shrinks to nothing."""
    sizes = []
    for i, _ in enumerate(filters, start=1):
        if padding == "same":
            conv = -(-size // strides)
        elif padding == "valid":
            conv = (size - kernel_size) // strides + 1
        else:
            raise ValueError(f"padding must be 'same' or 'valid', not {padding!r}")
        if conv < 2:
            raise ValueError(
                f"configuration filters={tuple(filters)} kernel_size={kernel_size} padding={padding} "
                f"strides={strides} shrinks the {size}x{size} input of conv block {i} to {max(conv, 0)}x"
                f"{max(conv, 0)}, too small for the 2x2 max-pool: use fewer blocks"
                + (", stride 1" if strides > 1 else "") + (" or 'same' padding" if padding == "valid" else "")
            )
        size = conv // 2
        sizes.append(size)
    return sizes


def build_cnn(
    filters: tuple[int, ...] = HOMEWORK["filters"],
    kernel_size: int = HOMEWORK["kernel_size"],
    padding: str = HOMEWORK["padding"],
    strides: int = HOMEWORK["strides"],
    dropout: float = 0.0,
    dense_units: int = 0,
    batch_norm: bool = False,
    global_pool: bool = False,
    weight_decay: float = 0.0,
    name: str = "cnn",
) -> keras.Sequential:
    """Conv2D blocks (conv [+ batch norm] + ReLU + 2x2 max-pool [+ Dropout]), then the classifier.

    The defaults are the homework network. The last layer is float32 so that the softmax
    stays exact under a mixed-precision policy.
    """
    filters = tuple(int(f) for f in filters)
    feature_map_sizes(filters, kernel_size, padding, strides)
    reg = keras.regularizers.L2(weight_decay) if weight_decay else None
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=INPUT_SHAPE, name="log_mel"))
    for f in filters:
        model.add(layers.Conv2D(f, kernel_size, strides=strides, padding=padding,
                                use_bias=not batch_norm, kernel_regularizer=reg))
        if batch_norm:
            model.add(layers.BatchNormalization())
        model.add(layers.ReLU())
        model.add(layers.MaxPooling2D(2))
        if dropout:
            model.add(layers.Dropout(dropout))
    model.add(layers.GlobalAveragePooling2D() if global_pool else layers.Flatten())
    if dense_units:
        model.add(layers.Dense(dense_units, activation="relu", kernel_regularizer=reg))
        if dropout:
            model.add(layers.Dropout(dropout))
    model.add(layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="family"))
    return model
