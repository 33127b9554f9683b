"""Reading a training run's own numbers aloud, without claiming more than they show: what the learning curves say,
whether the model is healthy enough to draw lessons from, and whether a difference is beyond the noise.

The walkthrough prints these sentences; they are functions so that tests can hold them to real runs' numbers.
"""

from __future__ import annotations

import numpy as np

from nsynth_keras.core.config import FAMILIES, NUM_CLASSES

LAST = 3  # epochs that count as "the end" of a run
RISE = 0.01  # accuracy change that counts as rising (or falling) over the last epochs


def read_curves(history: dict[str, list[float]]) -> str:
    """One sentence on a run's curves. A valid accuracy that never leaves chance while training succeeds is named
    first (no curve reading holds then); over-fitting (train accuracy high and climbing while valid loss rises or
    valid accuracy falls at the end) is checked before "still rising", which needs valid accuracy to rise at the
    end; under-fitting when both stay low."""
    train, valid = history["accuracy"], history["val_accuracy"]
    val_loss = history.get("val_loss", [])
    n = len(valid)
    end = max(0, n - LAST)
    best = int(np.argmax(valid))
    valid_change = valid[-1] - valid[end]
    loss_change = val_loss[-1] - min(val_loss) if val_loss else 0.0
    gap = train[-1] - valid[-1]
    near_chance = 2.5 / NUM_CLASSES
    if max(valid) < near_chance <= train[-1]:
        return (f"not learning anything that carries over: train accuracy reached {train[-1]:.2f} while valid "
                f"accuracy never rose above {max(valid):.2f}, near chance. That is not over-fitting but a model "
                "that fails on any note it did not train on (a layer that behaves differently in inference, such "
                "as BatchNormalization, or labels out of order): see the health check below")
    if n >= 2 and gap > 0.1 and (loss_change > 0.05 or valid_change < -RISE or best < end):
        if loss_change > 0.05:
            why = f"valid loss rose from its lowest {min(val_loss):.2f} to {val_loss[-1]:.2f}"
        elif valid_change < -RISE:
            why = f"valid accuracy fell {valid[end]:.2f} -> {valid[-1]:.2f} over the last epochs"
        else:
            why = f"valid accuracy peaked at epoch {best + 1} of {n}"
        return (f"over-fitting: train accuracy {train[-1]:.2f} against valid {valid[-1]:.2f}, and {why}; the kept "
                f"epoch is the best on valid ({best + 1})")
    if max(train[-1], valid[-1]) < 2.5 / NUM_CLASSES:
        return f"under-fitting: train {train[-1]:.2f} and valid {valid[-1]:.2f} both stay low"
    if n >= 2 and valid_change > RISE and best >= n - 2:
        return (f"still learning: valid accuracy rose {valid[end]:.2f} -> {valid[-1]:.2f} over the last "
                f"{n - 1 - end} epochs; more epochs would likely help")
    return (f"settled: train {train[-1]:.2f}, valid {valid[-1]:.2f}, best valid at epoch {best + 1} of {n}; more "
            "epochs alone would not change much")


def health_problems(y_true: np.ndarray, probs: np.ndarray, train_families: np.ndarray,
                    probs_training_mode: np.ndarray | None = None, what: str = "valid") -> list[str]:
    """Why a model is not fit to draw lessons from (an empty list if none): accuracy near chance, a family it
    never trained on named often, or (``probs_training_mode``: the same notes with batch statistics, as
    ``model(x, training=True)``) BatchNormalization whose moving statistics do not match the data."""
    problems = []
    present = np.unique(train_families)
    chance = max(np.bincount(y_true, minlength=NUM_CLASSES)) / len(y_true)  # always naming the commonest family
    accuracy = float((probs.argmax(1) == y_true).mean())
    if accuracy < chance + 0.1:
        problems.append(f"{what} accuracy {accuracy:.2f} is near chance ({chance:.2f} by always naming one family)")
    predicted = np.bincount(probs.argmax(1), minlength=NUM_CLASSES) / len(probs)
    unseen = [(FAMILIES[f], predicted[f]) for f in range(NUM_CLASSES) if f not in present and predicted[f] > 0.1]
    for name, share in unseen:
        problems.append(f"it calls {share:.0%} of the {what} notes {name}, a family with no training note")
    if probs_training_mode is not None:
        agree = float((probs_training_mode.argmax(1) == probs.argmax(1)).mean())
        batch_accuracy = float((probs_training_mode.argmax(1) == y_true).mean())
        if agree < 0.8 and batch_accuracy > accuracy + 0.1:
            problems.append(
                f"BatchNormalization is not ready for inference: with batch statistics it scores {batch_accuracy:.2f}, "
                f"with its moving averages {accuracy:.2f} (the two agree on {agree:.0%} of notes). The moving "
                "averages have not caught up with the data in so few steps: train more steps, or lower "
                "BatchNormalization's momentum (its default 0.99 needs hundreds; 0.9 tens)")
    return problems


def beyond_noise(difference: float, noise: float, what: str) -> str:
    """A difference between two runs, read against the spread the same configuration shows from seed alone."""
    if abs(difference) <= max(noise, 0.01):
        return (f"{what}: {difference:+.3f}, within the noise (the same network differed by {noise:.3f} from seed "
                "and shuffling alone): one run cannot tell them apart")
    return (f"{what}: {difference:+.3f}, beyond the {noise:.3f} that seed and shuffling alone gave, in this run "
            f"({'a gain' if difference > 0 else 'a loss'}; bench/accuracy.py measures it over 3 seeds)")
