"""Plots: learning curves, confusion matrices, mels by family, kernels and top activations."""

from __future__ import annotations

import os

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nsynth_keras.config import FAMILIES, SAMPLE_RATE  # noqa: E402
from nsynth_keras.data import DataSpec  # noqa: E402
from nsynth_keras.pipeline import eval_dataset, load_split  # noqa: E402
from nsynth_keras.runs import atomic_path, find_model, load_keras  # noqa: E402


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


# --------------------------------------------------------------------------- what the data and the CNN look like


def one_note_per_family(spec: DataSpec, split: str = "train") -> list[dict]:
    """The first note of each family present in a split: note, family, waveform, log-mel."""
    chosen: dict[int, dict] = {}
    for batch in eval_dataset(spec, split):
        for i, family in enumerate(batch["family"].numpy()):
            if int(family) not in chosen:
                chosen[int(family)] = {"note": batch["note"][i].numpy().decode(), "family": FAMILIES[family],
                                       "audio": batch["audio"][i].numpy(), "mel": batch["mel"][i].numpy()[..., 0]}
    return [chosen[f] for f in sorted(chosen)]


def plot_mels_by_family(notes: list[dict], path: str) -> None:
    """Waveform (top) and 64x64 log-mel (bottom) of one note per family."""
    fig, axes = plt.subplots(2, len(notes), figsize=(2.2 * len(notes), 4.6), squeeze=False)
    t = np.arange(len(notes[0]["audio"])) / SAMPLE_RATE
    for i, n in enumerate(notes):
        axes[0, i].plot(t, n["audio"], lw=0.3)
        axes[0, i].set_title(f"{n['family']}\n{n['note']}", fontsize=8)
        axes[0, i].set_xlabel("s", fontsize=7)
        axes[0, i].set_ylim(-1, 1)
        axes[1, i].imshow(n["mel"].T, origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1)
        axes[1, i].set_xlabel("frame", fontsize=7)
        for ax in axes[:, i]:
            ax.tick_params(labelsize=6)
            if i:
                ax.set_yticklabels([])
    axes[0, 0].set_ylabel("waveform")
    axes[1, 0].set_ylabel("mel band")
    fig.suptitle("One note per family: waveform and 64x64 log-mel (time left to right, pitch bottom to top)")
    save_figure(fig, path)


def plot_kernels(model, path: str) -> None:
    """The first conv layer's learned kernels, one small image each."""
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernels = conv.get_weights()[0]  # [k, k, 1, filters]
    n = kernels.shape[-1]
    cols = min(8, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows), squeeze=False)
    limit = np.abs(kernels).max()
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(kernels[:, :, 0, i].T, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"#{i}", fontsize=7)
    fig.suptitle(f"First conv layer: {n} learned {kernels.shape[0]}x{kernels.shape[1]} kernels "
                 "(x: time, y: mel; red +, blue -)", fontsize=9)
    save_figure(fig, path)


def block_activations(model, x: np.ndarray) -> list[np.ndarray]:
    """Each conv block's ReLU output for log-mels x: a list of [n, h, w, channels]."""
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    probe = keras.Model(model.inputs, [layer.output for layer in relus])
    outputs = probe.predict(x, batch_size=64, verbose=0)
    return outputs if isinstance(outputs, list) else [outputs]


def top_activating(activations: list[np.ndarray], channels_per_block: int = 2, top_n: int = 5):
    """For the most selective channels of each block (largest spread of per-note peaks),
    the indices of the notes that activate them most: [(block, channel, [note indices])]."""
    chosen = []
    for block, act in enumerate(activations, start=1):
        peaks = act.max(axis=(1, 2))  # [notes, channels]
        for channel in np.argsort(peaks.std(axis=0))[::-1][:channels_per_block]:
            chosen.append((block, int(channel), list(np.argsort(peaks[:, channel])[::-1][:top_n])))
    return chosen


def plot_top_activations(mels: np.ndarray, families: list[str], chosen, path: str) -> None:
    """One row per (block, channel): the log-mels of the notes that excite it most."""
    top_n = len(chosen[0][2])
    fig, axes = plt.subplots(len(chosen), top_n, figsize=(1.6 * top_n + 1, 1.6 * len(chosen)), squeeze=False)
    for row, (block, channel, notes) in enumerate(chosen):
        for col, i in enumerate(notes):
            ax = axes[row, col]
            ax.imshow(mels[i, ..., 0].T, origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(families[i], fontsize=7)
        axes[row, 0].set_ylabel(f"block {block}\nch {channel}", fontsize=8)
    fig.suptitle("Notes that activate chosen channels most (after Zeiler & Fergus 2014)", fontsize=9)
    save_figure(fig, path)


def visualize_run(run: str, spec: DataSpec, split: str = "valid", out: str | None = None) -> dict[str, str]:
    """kernels.png, top_activations.png and mels_by_family.png for a run; returns name -> path."""
    out = out or (run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)))
    model = load_keras(find_model(run))
    paths = {name: os.path.join(out, f"{name}.png") for name in ("kernels", "top_activations", "mels_by_family")}
    plot_kernels(model, paths["kernels"])
    notes = load_split(spec, split, ("mel", "family"))
    families = [FAMILIES[i] for i in notes["family"]]
    plot_top_activations(notes["mel"], families, top_activating(block_activations(model, notes["mel"])),
                         paths["top_activations"])
    plot_mels_by_family(one_note_per_family(spec, split), paths["mels_by_family"])
    return paths
