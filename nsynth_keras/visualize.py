"""Plots: learning curves, confusion matrices, mels by family, kernels and top activations."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nsynth_keras.runs import atomic_path  # noqa: E402


def save_figure(fig, path: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_learning_curves(history: dict[str, list[float]], path: str) -> None:
    """Loss and accuracy per epoch, train vs valid."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history.get(metric, []), "o-", label="train")
        ax.plot(epochs, history.get(f"val_{metric}", []), "o-", label="valid")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: train vs valid")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Learning curves (a widening gap means over-fitting)")
    save_figure(fig, path)
