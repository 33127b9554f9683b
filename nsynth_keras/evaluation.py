"""Scoring a model on a split: per-family report, confusion matrix, results by instrument source."""

from __future__ import annotations

import os
import time

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

from nsynth_keras.config import FAMILIES, NUM_CLASSES, SOURCES
from nsynth_keras.data import DataSpec
from nsynth_keras.files import write_json
from nsynth_keras.inference import Classifier, load_classifier
from nsynth_keras.pipeline import eval_dataset
from nsynth_keras.plots import plot_confusion
from nsynth_keras.runs import RunError, RunFolder, is_saved_model


def predict_split(clf: Classifier, spec: DataSpec, split: str, batch_size: int = 64):
    """(true families, instrument sources, probabilities) for every note of a split."""
    ys, srcs, probs = [], [], []
    for batch in eval_dataset(spec, split, batch_size):
        x = batch["audio"] if clf.takes_waveform else batch["mel"]
        probs.append(clf.predict(x.numpy()))
        ys.append(batch["family"].numpy())
        srcs.append(batch["source"].numpy())
    probs = np.concatenate(probs)
    bad = int((~np.isfinite(probs).all(axis=1)).sum())
    if bad:
        raise RunError(f"{clf.path}: the model returned NaN or infinite probabilities for {bad} of {len(probs)} "
                       "notes (a diverged run?)")
    return np.concatenate(ys), np.concatenate(srcs), probs


def report(y_true: np.ndarray, probs: np.ndarray, sources: np.ndarray | None = None) -> dict:
    """Accuracy, per-family precision/recall/F1/support, macro-F1 over present families,
    top-3 accuracy, the confusion matrix and accuracy by instrument source."""
    labels = list(range(NUM_CLASSES))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0
    families = {}
    for i, name in enumerate(FAMILIES):
        if present[i]:
            families[name] = {"accuracy": float(recall[i]), "precision": float(precision[i]),
                              "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
        else:  # no notes of this family: not averaged in as zero
            families[name] = {"support": 0, "note": "no notes of this family in the split",
                              "predicted": int((y_pred == i).sum())}
    result = {
        "num_notes": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "top3_accuracy": float(top_k_accuracy_score(y_true, probs, k=3, labels=labels)),
        "macro_f1": float(f1[present].mean()),
        "macro_f1_families": [FAMILIES[i] for i in labels if present[i]],
        "families": families,
        "confusion_matrix": {"rows": "true family", "columns": "predicted family", "labels": list(FAMILIES),
                             "counts": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }
    if sources is not None:
        result["by_source"] = {
            name: {"accuracy": float((y_pred[sources == i] == y_true[sources == i]).mean()),
                   "num_notes": int((sources == i).sum())}
            for i, name in enumerate(SOURCES) if (sources == i).any()
        }
    return result


def format_report(r: dict, title: str = "") -> str:
    """The report as text; a family's recall is its accuracy (the share of its notes named right)."""
    lines = [title] if title else []
    lines.append(f"{'family':<12}{'precision':>10}{'recall':>8}{'f1':>7}{'support':>9}")
    for name, m in r["families"].items():
        if m["support"]:
            lines.append(f"{name:<12}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{m['support']:>9d}")
        else:
            lines.append(f"{name:<12}{'(no notes in this split)':>34}")
    lines.append(f"\naccuracy {r['accuracy']:.3f}   top-3 {r['top3_accuracy']:.3f}   "
                 f"macro-F1 {r['macro_f1']:.3f} (over {len(r['macro_f1_families'])} families)   "
                 f"notes {r['num_notes']}")
    if "by_source" in r:
        lines.append("by source: " + ", ".join(f"{k} {v['accuracy']:.3f} (n={v['num_notes']})"
                                             for k, v in r["by_source"].items()))
    return "\n".join(lines)


def read_confusion(r: dict, limit: int = 5) -> list[str]:
    """The confusion matrix read aloud: the largest off-diagonal cells, as sentences."""
    counts = np.asarray(r["confusion_matrix"]["counts"])
    support = counts.sum(axis=1)
    n = len(FAMILIES)
    cells = [(counts[i, j], i, j) for i in range(n) for j in range(n) if i != j and counts[i, j]]
    return [f"{n} of {support[i]} {FAMILIES[i]} notes were called {FAMILIES[j]}"
            for n, i, j in sorted(cells, reverse=True)[:limit]]


def is_run_folder(model: str) -> bool:
    """A folder that is not a SavedModel: where a report goes (its model.keras is found, or refused, by
    find_model). Looser than RunFolder.is_run, which also needs config.json (a complete training run)."""
    return os.path.isdir(model) and not is_saved_model(model)


def output_stem(model: str) -> str:
    """'' for a run folder or its model.keras, else '_<file stem>' so reports do not collide."""
    if is_run_folder(model):
        return ""
    name = os.path.basename(os.path.normpath(model))
    return "" if name == RunFolder.MODEL else "_" + name.split(".")[0]


def evaluate(model: str, spec: DataSpec, split: str, out: str | None = None,
             trust_saved_model: bool = False) -> tuple[dict, str]:
    clf = load_classifier(model, trust_saved_model=trust_saved_model)
    t = time.time()
    y, src, probs = predict_split(clf, spec, split)
    r = report(y, probs, src)
    r.update({"split": split, "model": os.path.abspath(clf.path), "model_kind": clf.kind,
              "data": spec.to_json(), "seconds": round(time.time() - t, 1)})
    folder = RunFolder(out or (model if is_run_folder(model) else os.path.dirname(os.path.abspath(clf.path))))
    stem = output_stem(model)
    json_path = folder.eval_json(split, stem)
    write_json(json_path, r)
    plot_confusion(np.asarray(r["confusion_matrix"]["counts"]), folder.confusion_png(split, stem),
                   title=f"{split}: accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f}")
    return r, json_path
