"""Scoring a model on a split: per-family report, confusion matrix, results by instrument source."""

from __future__ import annotations

import csv
import os
import time

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

from nsynth_keras.core.config import CLIP_SECONDS, FAMILIES, NUM_CLASSES, SAMPLE_RATE, SOURCES
from nsynth_keras.core.errors import SettingsError
from nsynth_keras.core.files import check_output_dir, write_json
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.features import log_mel
from nsynth_keras.data.notes import JsonWavLayout
from nsynth_keras.data.pipeline import eval_dataset
from nsynth_keras.data.twins import SplitAudit, audit_split
from nsynth_keras.deploy.inference import Classifier, load_classifier, non_finite
from nsynth_keras.models.runs import RunError, RunFolder, is_saved_model
from nsynth_keras.reports.plots import plot_confusion

MANIFEST = "manifest.csv"  # where a data folder may say which public copy each note came from


def predict_split(clf: Classifier, spec: DataSpec, split: str, batch_size: int = 64, onset_delay: float = 0.0):
    """(true families, instrument sources, probabilities, note names) for every note of a split, in file order."""
    y, sources, (probs,), notes = predict_split_with([clf], spec, split, batch_size, onset_delay)
    return y, sources, probs, notes


def delayed(audio: np.ndarray, seconds: float) -> np.ndarray:
    """Notes [batch, samples] moved later by ``seconds``: silence in front, their ends cut."""
    k = min(round(seconds * SAMPLE_RATE), audio.shape[-1])
    return np.concatenate([np.zeros_like(audio[..., :k]), audio[..., : audio.shape[-1] - k]], axis=-1)


def predict_split_with(clfs: list[Classifier], spec: DataSpec, split: str, batch_size: int = 64,
                       onset_delay: float = 0.0):
    """predict_split for several models (an ensemble's members), decoding the split once, each model fed its own
    input (its frontend's features, or the audio): (true families, instrument sources, [probabilities of each
    model], note names). ``onset_delay``: every note moved that many seconds later first (a recording that does
    not start at the note's onset)."""
    ys, srcs, notes = [], [], []
    probs: list[list[np.ndarray]] = [[] for _ in clfs]
    # The pipeline computes the first model's features, unless they would be thrown away (delayed notes, audio in)
    first = None if onset_delay or clfs[0].takes_waveform else clfs[0].frontend
    for batch in eval_dataset(spec, split, batch_size, first):
        audio = delayed(batch["audio"].numpy(), onset_delay) if onset_delay else batch["audio"].numpy()
        # features by frontend, each computed once a batch
        inputs = {first: batch["mel"].numpy()} if first else {}
        for out, clf in zip(probs, clfs):
            if clf.takes_waveform:
                x = audio
            else:
                if clf.frontend not in inputs:
                    inputs[clf.frontend] = log_mel(audio, clf.frontend).numpy()
                x = inputs[clf.frontend]
            out.append(clf.predict(x))
        ys.append(batch["family"].numpy())
        srcs.append(batch["source"].numpy())
        notes += [n.decode() for n in batch["note"].numpy()]
    if not ys:
        raise RunError(f"no notes to evaluate in the {split} split of {spec.data_dir}")
    probs = [np.concatenate(p) for p in probs]
    for clf, p in zip(clfs, probs):
        bad = int(non_finite(p).sum())
        if bad:
            raise RunError(f"{clf.path}: the model returned NaN or infinite probabilities for {bad} of {len(p)} "
                           "notes (a diverged run?)")
    return np.concatenate(ys), np.concatenate(srcs), probs, notes


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
    right = probs.max(axis=1)[y_pred == y_true]
    # The top-1 probability that 9 in 10 notes named right reach: below it an answer is more of a guess.
    result["confidence_floor"] = float(np.percentile(right, 10)) if len(right) else None
    if sources is not None:
        result["by_source"] = {
            name: {"accuracy": float((y_pred[sources == i] == y_true[sources == i]).mean()),
                   "num_notes": int((sources == i).sum())}
            for i, name in enumerate(SOURCES) if (sources == i).any()
        }
    return result


def subset_report(y_true: np.ndarray, probs: np.ndarray, keep: np.ndarray) -> dict:
    """Accuracy, macro-F1 and per-family recall on some of the notes, and the families it never names right."""
    if not keep.any():
        return {"num_notes": 0}
    r = report(y_true[keep], probs[keep])
    recall = {name: m["recall"] for name, m in r["families"].items() if m["support"]}
    return {"num_notes": r["num_notes"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
            "recall": recall, "missed_families": [name for name, v in recall.items() if v == 0]}


def copies_of(data_dir: str | None) -> dict[tuple[str, str], set[str]]:
    """(split, note) -> the public copies it was gathered from, where the data folder has a manifest.csv with
    split, note_str and origin_repo (several joined by ';', as the shared subset's); {} otherwise."""
    path = os.path.join(data_dir or "", MANIFEST)
    if not data_dir or not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"note_str", "split", "origin_repo"} <= set(rows[0]):
        return {}
    return {(r["split"], r["note_str"]): set(filter(None, r["origin_repo"].split(";"))) for r in rows}


def has_train_split(spec: DataSpec) -> bool:
    """Whether there are training notes to audit against (a folder of held-out rendered notes has none)."""
    return spec.source != "jsonwav" or JsonWavLayout(spec.data_dir).has("train")


def generalisation(spec: DataSpec, split: str, y: np.ndarray, probs: np.ndarray, notes: list[str],
                   audit: SplitAudit | None = None) -> dict:
    """What a split's score means for instruments and recordings never heard: the twin audit (novel notes: no
    near-copy among the training notes; ``audit``: one already made of this split) and, where the data folder says
    where each note was copied from, the notes of copies that no training note comes from."""
    audit = audit or audit_split(spec, split)
    if audit.notes != notes:
        raise RunError(f"the twin audit of {split} read other notes than the evaluation ({len(audit.notes)} vs "
                       f"{len(notes)})")
    out = {"twin_audit": audit.summary(), "novel": subset_report(y, probs, ~audit.twin),
           "twins": subset_report(y, probs, audit.twin), "unheard_kinds": subset_report(y, probs, audit.unheard_kind)}
    copies = copies_of(spec.data_dir)
    if copies:
        train_copies = set().union(*(c for (s, _), c in copies.items() if s == "train"))
        other = np.array([not copies.get((split, n), train_copies) & train_copies for n in notes])
        out["other_copies"] = {"training_copies": sorted(train_copies), **subset_report(y, probs, other)}
    return out


SCORED_PARTS = ("all", "novel", "other_copies", "unheard_kinds")


def split_scores(spec: DataSpec, split: str, y: np.ndarray, probs: np.ndarray, notes: list[str],
                 audit: SplitAudit | None = None) -> dict[str, float | None]:
    """Accuracy on the whole split, its novel notes and (where known) its notes of other copies."""
    r = {"all": report(y, probs)["accuracy"]}
    g = generalisation(spec, split, y, probs, notes, audit)
    r.update({part: g[part].get("accuracy") for part in SCORED_PARTS[1:] if part in g})
    return r


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
    for key, what in (("novel", "novel notes (no training twin)"), ("twins", "notes with a training twin"),
                      ("other_copies", "notes of copies no training note comes from"),
                      ("unheard_kinds", "notes of a family and source no training note has")):
        part = r.get(key)
        if part and part["num_notes"]:
            missed = f"; never right: {', '.join(part['missed_families'])}" if part["missed_families"] else ""
            lines.append(f"{what}: accuracy {part['accuracy']:.3f} (n={part['num_notes']}){missed}")
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


def onset_stem(onset_delay: float) -> str:
    """The report names' mark for notes moved later: '' at 0, '_onset100ms' at 0.1 s."""
    return f"_onset{onset_delay * 1000:g}ms" if onset_delay else ""


def evaluate(model: str, spec: DataSpec, split: str, out: str | None = None,
             trust_saved_model: bool = False, audit: bool = True, onset_delay: float = 0.0) -> tuple[dict, str]:
    """Score a model on a split and write eval_<split>.json and its confusion matrix. ``audit``: also score the
    novel notes (twin audit against the train split) and the notes of other copies (valid and test only).
    ``onset_delay``: every note moved that many seconds later (silence in front), reported as
    eval_<split>_onset<ms>ms.json."""
    if not 0 <= onset_delay < CLIP_SECONDS:
        raise SettingsError(f"--onset-delay {onset_delay:g}: give at least 0 and under {CLIP_SECONDS:g} s (a note's "
                            "length)")
    if out is not None:
        check_output_dir(out, "--out")  # before any work
    clf = load_classifier(model, trust_saved_model=trust_saved_model)
    t = time.time()
    y, src, probs, notes = predict_split(clf, spec, split, onset_delay=onset_delay)
    r = report(y, probs, src)
    if audit and split != "train" and has_train_split(spec):
        r.update(generalisation(spec, split, y, probs, notes))
    r.update({"split": split, "model": os.path.abspath(clf.path), "model_kind": clf.kind,
              # A waveform model (the export, an ensemble of frontends) computes its own features: none is applied.
              "frontend": ({"source": "none applied: the model takes 16 kHz audio and computes its own features"}
                           if clf.takes_waveform else {**clf.frontend.to_json(), "source": clf.frontend_source}),
              "data": spec.to_json(), "onset_delay": onset_delay, "seconds": round(time.time() - t, 1)})
    folder = RunFolder(out or (model if is_run_folder(model) else os.path.dirname(os.path.abspath(clf.path))))
    stem = output_stem(model) + onset_stem(onset_delay)
    json_path = folder.eval_json(split, stem)
    write_json(json_path, r)
    plot_confusion(np.asarray(r["confusion_matrix"]["counts"]), folder.confusion_png(split, stem),
                   title=f"{split}: accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f}")
    return r, json_path
