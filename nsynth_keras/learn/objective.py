"""What training optimises: the optimizer, loss and metrics a model is compiled with.

Keras only, no TensorFlow: a Keras 3 run on another backend (bench/gpu.py on JAX) compiles the same model.
"""

from __future__ import annotations

import keras

# Keras steps per call into the backend: 32 trained the homework CNN 1.24-1.37x faster than 1 on a 2-core AVX2 CPU
# (bench/speed.py, two runs), the per-step overhead being a large share of a small model's step.
STEPS_PER_EXECUTION = 32


def compile_model(model: keras.Model, learning_rate, label_smoothing: float = 0.0,
                  steps_per_execution: int = STEPS_PER_EXECUTION, ema: float = 0.0) -> None:
    """Adam at ``learning_rate`` (a float or a schedule), categorical cross-entropy, accuracy and top-3. ``ema``
    above 0: the optimizer also keeps a moving average of the weights with that momentum (Polyak averaging), which
    fit assigns to the model at its end and keras.callbacks.SwapEMAWeights swaps in for validation."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, use_ema=ema > 0, ema_momentum=ema or 0.99),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(3, name="top3")],
        steps_per_execution=steps_per_execution,
    )
