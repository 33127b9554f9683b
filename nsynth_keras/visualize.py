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


def plot_confusion(counts: np.ndarray, path: str, title: str = "") -> None:
    """Rows true family, columns predicted; colour is the row-normalised rate, text the count."""
    from nsynth_keras.config import FAMILIES

    rows = counts.sum(axis=1, keepdims=True)
    rate = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    n = len(FAMILIES)
    ax.set_xticks(range(n), FAMILIES, rotation=45, ha="right")
    ax.set_yticks(range(n), FAMILIES)
    ax.set_xlabel("predicted family")
    ax.set_ylabel("true family")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                        color="white" if rate[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true family's notes")
    ax.set_title(title or "Confusion matrix")
    save_figure(fig, path)


def plot_tuning(trials: list[dict], path: str) -> None:
    """val_accuracy against kernel count, padding and stride, one point per completed trial."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, key, label in zip(axes, ("base_filters", "padding", "strides"),
                              ("kernels in the first block", "padding", "stride")):
        values = [str(t[key]) for t in trials]
        cats = sorted(set(values), key=lambda v: (len(v), v))
        xs = [cats.index(v) + np.random.default_rng(len(ax.lines)).uniform(-0.1, 0.1) for v in values]
        ax.scatter(xs, [t["val_accuracy"] for t in trials], alpha=0.7)
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best val_accuracy")
    fig.suptitle("Tuning trials")
    save_figure(fig, path)
