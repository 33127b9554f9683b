"""The walkthrough's readings of a run, held to real runs' numbers (the histories the notebook printed)."""

from __future__ import annotations

import keras
import numpy as np

from nsynth_keras.core.config import NUM_CLASSES
from nsynth_keras.reports.lessons import beyond_noise, health_problems, read_curves

# The homework CNN, FAST (6 epochs), as the round-4 review saw it: valid 0.66 -> 0.65, val_loss 1.05 -> 1.28,
# train 0.97. The old reader called it "still rising ... under-trained".
OVERFIT = {"accuracy": [0.41, 0.70, 0.82, 0.90, 0.95, 0.97], "val_accuracy": [0.41, 0.55, 0.60, 0.64, 0.66, 0.65],
           "val_loss": [1.71, 1.30, 1.12, 1.05, 1.15, 1.28]}
# The halved network: valid 0.59 -> 0.59, val_loss 1.21 -> 1.49.
HALVED = {"accuracy": [0.35, 0.62, 0.75, 0.84, 0.90, 0.93], "val_accuracy": [0.37, 0.50, 0.56, 0.59, 0.59, 0.59],
          "val_loss": [1.80, 1.40, 1.25, 1.21, 1.33, 1.49]}
RISING = {"accuracy": [0.30, 0.45, 0.55, 0.62, 0.66, 0.70], "val_accuracy": [0.30, 0.40, 0.48, 0.53, 0.58, 0.63],
          "val_loss": [1.9, 1.6, 1.45, 1.35, 1.25, 1.15]}
LOW = {"accuracy": [0.12, 0.13, 0.15, 0.16, 0.17, 0.18], "val_accuracy": [0.10, 0.12, 0.11, 0.13, 0.14, 0.15],
       "val_loss": [2.4, 2.35, 2.3, 2.3, 2.28, 2.27]}

# The BatchNorm edit (default momentum), FAST: train 0.75 -> 1.00 while valid sits at chance, val_loss 2.42 -> 3.85.
BROKEN = {"accuracy": [0.7454, 0.9826, 0.9988, 0.9988, 1.0, 1.0], "val_accuracy": [0.125, 0.1, 0.1, 0.1, 0.1, 0.1],
          "val_loss": [2.4184, 2.7806, 3.2395, 3.5648, 3.8516, 3.8541]}


def test_the_curve_reader_says_what_the_numbers_say():
    assert read_curves(OVERFIT).startswith("over-fitting") and "1.28" in read_curves(OVERFIT)
    assert read_curves(HALVED).startswith("over-fitting")
    assert read_curves(RISING).startswith("still learning") and "0.53 -> 0.63" in read_curves(RISING)
    assert read_curves(LOW).startswith("under-fitting")
    broken = read_curves(BROKEN)
    assert broken.startswith("not learning anything that carries over") and "never rose above 0.12" in broken
    assert "over-fitting" not in broken.split(".")[0]


def test_a_broken_batchnorm_model_is_named_before_any_lesson():
    rng = np.random.default_rng(0)
    x = (5 + rng.normal(0, 0.05, (128, 8))).astype("float32")  # like log-mels: far from 0, a narrow spread
    y = (x[:, 0] > 5).astype(int)
    model = keras.Sequential([keras.Input((8,)), keras.layers.BatchNormalization(),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(NUM_CLASSES, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=100, batch_size=128, verbose=0)
    bn = model.layers[0]
    # After too few steps the moving averages are still near their start (0 and 1), far from the data's.
    bn.moving_mean.assign(np.zeros(8, "float32"))
    bn.moving_variance.assign(np.ones(8, "float32"))
    inference = model.predict(x, verbose=0)
    batch = np.asarray(model(x, training=True))
    problems = health_problems(y, inference, np.array([0, 1]), batch)
    assert any("BatchNormalization is not ready for inference" in p for p in problems), problems
    assert health_problems(y, batch, np.array([0, 1])) == []  # the same weights, with the right statistics


def test_a_family_with_no_training_note_and_chance_accuracy_are_named():
    y = np.array([0, 1] * 50)
    probs = np.zeros((100, NUM_CLASSES))
    probs[:, 9] = 1.0  # always synth_lead
    problems = health_problems(y, probs, np.array([0, 1]))
    assert any("near chance" in p for p in problems)
    assert any("100% of the valid notes synth_lead" in p for p in problems)


def test_a_difference_is_a_gain_only_beyond_the_noise():
    assert "within the noise" in beyond_noise(0.028, 0.031, "augmentation")
    assert "beyond the 0.031" in beyond_noise(0.046, 0.031, "augmentation") and "a gain" in beyond_noise(
        0.046, 0.031, "augmentation")
