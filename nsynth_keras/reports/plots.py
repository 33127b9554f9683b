"""Plots: learning curves, confusion matrices, mels by family, kernels and top activations.

Each function returns its matplotlib Figure (a notebook shows it inline) and, given a path,
also writes it there as a PNG (atomically) and closes it (what the commands do).
"""

from __future__ import annotations

import os
import sys

import keras
import matplotlib

if "ipykernel" not in sys.modules:  # commands and tests draw off-screen; a notebook keeps its inline backend
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nsynth_keras.core.config import FAMILIES, HOP_LENGTH, N_MELS, SAMPLE_RATE, TOP_DB  # noqa: E402
from nsynth_keras.core.files import atomic_path  # noqa: E402
from nsynth_keras.data.datasets import DataSpec  # noqa: E402
from nsynth_keras.data.features import DEFAULT_FRONTEND, Frontend, mel_band_hz  # noqa: E402
from nsynth_keras.data.pipeline import eval_dataset, load_split  # noqa: E402
from nsynth_keras.models.runs import RunError, find_model, load_keras, run_frontend  # noqa: E402


def save_figure(fig, path: str | None):
    """Write the figure to path (if given) and close it; return it."""
    if path:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


def plot_learning_curves(history: dict[str, list[float]], path: str | None = None):
    """Loss and accuracy per epoch, train vs valid; the kept epoch (best val_accuracy) is marked."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    val_acc = history.get("val_accuracy", [])
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history.get(metric, []), "o-", label="train")
        ax.plot(epochs, history.get(f"val_{metric}", []), "o-", label="valid")
        if len(val_acc):
            ax.axvline(int(np.argmax(val_acc)) + 1, color="grey", ls="--", lw=1, label="kept (best val accuracy)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: train vs valid")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8, framealpha=0.6)
    fig.suptitle("Learning curves (a widening gap means over-fitting)")
    return save_figure(fig, path)


def plot_confusion(counts: np.ndarray, path: str | None = None, title: str = ""):
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
    return save_figure(fig, path)


def plot_tuning(trials: list[dict], path: str | None = None):
    """val_accuracy against kernel count, padding and stride, one point per completed trial."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True, constrained_layout=True)
    rng = np.random.default_rng(0)  # horizontal jitter so equal values do not hide each other
    for ax, key, label in zip(axes, ("base_filters", "padding", "strides"),
                              ("kernels in the first block", "padding", "stride")):
        values = [str(t[key]) for t in trials]
        cats = sorted(set(values), key=lambda v: (len(v), v))
        xs = np.array([cats.index(v) for v in values]) + rng.uniform(-0.1, 0.1, len(values))
        ax.scatter(xs, [t["val_accuracy"] for t in trials], alpha=0.7)
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.5, max(len(cats), 2) - 0.5)  # one value stays one narrow column, not the whole axis
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best val_accuracy")
    fig.suptitle("Tuning trials")
    return save_figure(fig, path)


# --------------------------------------------------------------------------- what the data and the CNN look like


def one_note_per_family(spec: DataSpec, split: str = "train", frontend: Frontend = DEFAULT_FRONTEND) -> list[dict]:
    """The first note of each family present in a split: note, family, waveform, features (log-mel by default)."""
    chosen: dict[int, dict] = {}
    for batch in eval_dataset(spec, split, frontend=frontend):
        for i, family in enumerate(batch["family"].numpy()):
            if int(family) not in chosen:
                chosen[int(family)] = {"note": batch["note"][i].numpy().decode(), "family": FAMILIES[family],
                                       "audio": batch["audio"][i].numpy(), "mel": batch["mel"][i].numpy()[..., 0]}
    return [chosen[f] for f in sorted(chosen)]


def show_mel(ax, mel: np.ndarray, ticks: bool = True):
    """One 64x64 log-mel on ax: time in seconds across, frequency (Hz) up, colour in dB re the note's peak."""
    db = (np.asarray(mel) - 1.0) * (TOP_DB / 2)
    seconds = len(db) * HOP_LENGTH / SAMPLE_RATE
    im = ax.imshow(db.T, origin="lower", aspect="auto", cmap="magma", vmin=-TOP_DB, vmax=0,
                   extent=(0, seconds, -0.5, N_MELS - 0.5))
    if ticks:
        hz = mel_band_hz()
        bands = [0, 16, 32, 48, 63]
        ax.set_yticks(bands, [f"{hz[b]:.0f}" for b in bands])
    else:
        ax.set_yticks([])
    return im


def plot_mels_by_family(notes: list[dict], path: str | None = None):
    """Waveform (top) and 64x64 log-mel (bottom) of one note per family."""
    fig, axes = plt.subplots(2, len(notes), figsize=(2.2 * len(notes) + 1, 4.8), squeeze=False, constrained_layout=True)
    t = np.arange(len(notes[0]["audio"])) / SAMPLE_RATE
    for i, n in enumerate(notes):
        axes[0, i].plot(t, n["audio"], lw=0.3)
        axes[0, i].set_title(f"{n['family']}\n{n['note']}", fontsize=8)
        axes[0, i].set_ylim(-1, 1)
        im = show_mel(axes[1, i], n["mel"], ticks=i == 0)
        for ax in axes[:, i]:
            ax.set_xlabel("s", fontsize=7)
            ax.tick_params(labelsize=6)
        if i:
            axes[0, i].set_yticklabels([])
    axes[0, 0].set_ylabel("waveform")
    axes[1, 0].set_ylabel("Hz (mel scale)")
    fig.colorbar(im, ax=axes[1, :].tolist(), label="dB re the note's peak", shrink=0.9)
    fig.suptitle("One note per family: waveform and 64x64 log-mel (time left to right, frequency bottom to top)")
    return save_figure(fig, path)


def plot_kernels(model, path: str | None = None):
    """The first conv layer's learned kernels, one small image each."""
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernels = conv.get_weights()[0]  # [k, k, 1, filters]
    n = kernels.shape[-1]
    cols = min(8, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(1.3 * cols, 6.5), 1.4 * rows + 0.6), squeeze=False,
                             constrained_layout=True)  # the title keeps its own room, however few kernels
    limit = np.abs(kernels).max()
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(kernels[:, :, 0, i].T, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"#{i}", fontsize=7)
    fig.suptitle(f"First conv layer: {n} learned {kernels.shape[0]}x{kernels.shape[1]} kernels "
                 "(x: time, y: mel; red +, blue -)", fontsize=9)
    return save_figure(fig, path)


def block_outputs(model) -> list:
    """The layer whose output is each conv block's activation, for any Sequential CNN: the ReLU (or other
    activation layer) after a Conv2D, else the first BatchNormalization/activation after it, else the Conv2D
    itself when it carries a fused activation (``Conv2D(..., activation="relu")``)."""
    layers, outputs = model.layers, []
    for i, layer in enumerate(layers):
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        chosen = layer
        for after in layers[i + 1 :]:
            if isinstance(after, (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU)):
                chosen = after
                break
            if not isinstance(after, keras.layers.BatchNormalization):
                break  # a pooling or dropout layer: the block's activation was the conv (or BN) output
            chosen = after
        outputs.append(chosen)
    if not outputs:
        raise ValueError(f"model {model.name!r} has no Conv2D layer to look inside")
    return outputs


def block_activations(model, x: np.ndarray) -> list[np.ndarray]:
    """Each conv block's activation for log-mels x: a list of [n, h, w, channels]."""
    probe = keras.Model(model.inputs, [layer.output for layer in block_outputs(model)])
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


def plot_top_activations(mels: np.ndarray, families: list[str], chosen, path: str | None = None):
    """One row per (block, channel): the log-mels of the notes that excite it most."""
    top_n = len(chosen[0][2])
    fig, axes = plt.subplots(len(chosen), top_n, figsize=(1.6 * top_n + 1, 1.6 * len(chosen)), squeeze=False,
                             constrained_layout=True)
    for row, (block, channel, notes) in enumerate(chosen):
        for col, i in enumerate(notes):
            ax = axes[row, col]
            image = ax.imshow(mels[i, ..., 0].T, origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(families[i], fontsize=7)
        axes[row, 0].set_ylabel(f"block {block}\nch {channel}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="log-mel (-1: 80 dB below the note's peak, 1: its peak)")
    fig.suptitle("Notes that activate chosen channels most (after Zeiler & Fergus 2014); x: time, y: mel band",
                 fontsize=9)
    return save_figure(fig, path)


def visualize_run(run: str, spec: DataSpec, split: str = "valid", out: str | None = None) -> dict[str, str]:
    """kernels.png, top_activations.png and mels_by_family.png for a run; returns name -> path."""
    out = out or (run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run)))
    model = load_keras(find_model(run))
    if not any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers):
        raise RunError(f"{run}: visualize draws one CNN's kernels and activations, and this model has none at its top "
                       "level (an ensemble?): visualize each member's run instead")
    frontend, _ = run_frontend(run)  # the features the run was trained on
    paths = {name: os.path.join(out, f"{name}.png") for name in ("kernels", "top_activations", "mels_by_family")}
    plot_kernels(model, paths["kernels"])
    notes = load_split(spec, split, ("mel", "family"), frontend=frontend)
    families = [FAMILIES[i] for i in notes["family"]]
    plot_top_activations(notes["mel"], families, top_activating(block_activations(model, notes["mel"])),
                         paths["top_activations"])
    plot_mels_by_family(one_note_per_family(spec, split, frontend), paths["mels_by_family"])
    return paths


def plot_twin_histogram(similarities: dict[str, np.ndarray], threshold: float, path: str | None = None):
    """How close each valid/test note comes to its nearest training note, per split, with the twin threshold."""
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    bins = np.linspace(0.5, 1.0, 51)
    for split, s in similarities.items():
        s = np.asarray(s)
        s = s[np.isfinite(s)]
        ax.hist(np.clip(s, bins[0], bins[-1]), bins=bins, alpha=0.55, label=f"{split} ({len(s)} notes)")
    ax.axvline(threshold, color="black", linestyle="--", label=f"twin threshold {threshold:g}")
    ax.set_xlabel("similarity to the nearest training note (mean-removed log-mel cosine; below 0.5 at 0.5)")
    ax.set_ylabel("notes")
    ax.set_title("Twin audit: notes right of the line have a near-copy in train")
    ax.legend()
    return save_figure(fig, path)
