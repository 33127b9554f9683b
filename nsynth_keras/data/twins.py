"""The twin audit: which valid/test notes have a near-copy among the training notes.

NSynth files some instruments more than once under different ids, and its official splits do not keep them
apart (mallet_acoustic_047 in test is mallet_acoustic_000 in train). A model that names such a note has
recognised an instrument it already heard, so every accuracy is also reported on the **novel** notes: those
whose nearest training note (same pitch within ``PITCH_WINDOW`` semitones) is less similar than
``TWIN_SIMILARITY``.

Similarity is the cosine of the project's own log-mel after removing each note's mean (a correlation), so
a louder or quieter copy of the same recording still matches. The threshold is calibrated on the shared
subset (README, "Twins"): every note's nearest training note of *another* family stays below 0.946 (valid
and test alike), while the notes of the known twin pair mallet_acoustic_047 / mallet_acoustic_000 reach
0.9476 and more, even at pitches whose exact copy was removed from train.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from nsynth_keras.core.config import FAMILIES
from nsynth_keras.data.datasets import DataSpec, make_dataset
from nsynth_keras.data.features import log_mel
from nsynth_keras.data.notes import Filters, JsonWavLayout, instrument_of

TWIN_SIMILARITY = 0.947
PITCH_WINDOW = 2  # semitones: a twin recording at a neighbouring pitch still counts
BATCH = 64


@dataclass
class NoteVectors:
    """Every note of a split as a unit vector (its log-mel minus its mean), with what names it."""

    notes: list[str]
    instruments: list[str]
    pitches: np.ndarray
    families: np.ndarray
    vectors: np.ndarray  # [n, 4096] float32, unit length

    def __len__(self) -> int:
        return len(self.notes)


def unit_vectors(mels: np.ndarray) -> np.ndarray:
    """Log-mels [n, ...] -> mean-removed unit vectors [n, d] (a silent note stays the zero vector)."""
    x = mels.reshape(len(mels), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def note_vectors(spec: DataSpec, split: str, part: str = "all") -> NoteVectors:
    """Decode a split (in file order, as evaluation reads it) into NoteVectors."""
    notes, instruments, pitches, families, vectors = [], [], [], [], []
    for batch in make_dataset(spec, split, part=part).dataset.batch(BATCH).prefetch(tf.data.AUTOTUNE):
        vectors.append(unit_vectors(log_mel(batch["audio"]).numpy()))
        notes += [n.decode() for n in batch["note"].numpy()]
        instruments += [n.decode() for n in batch["instrument"].numpy()]
        pitches.append(batch["pitch"].numpy())
        families.append(batch["family"].numpy())
    empty = np.zeros(0, np.int32)
    return NoteVectors(notes, instruments, np.concatenate(pitches) if pitches else empty,
                       np.concatenate(families) if families else empty,
                       np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32))


def nearest(query: NoteVectors, reference: NoteVectors, pitch_window: int = PITCH_WINDOW,
            chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest reference note, its similarity) for each query note, among reference notes within
    ``pitch_window`` semitones; index -1 and similarity -inf where none is that close in pitch."""
    index = np.full(len(query), -1)
    similarity = np.full(len(query), -np.inf, np.float32)
    if not len(reference):
        return index, similarity
    for start in range(0, len(query), chunk):
        part = slice(start, start + chunk)
        s = query.vectors[part] @ reference.vectors.T
        s[np.abs(query.pitches[part, None] - reference.pitches[None, :]) > pitch_window] = -np.inf
        best = s.argmax(axis=1)
        value = s[np.arange(len(best)), best]
        found = np.isfinite(value)
        index[part] = np.where(found, best, -1)
        similarity[part] = value
    return index, similarity


@dataclass
class SplitAudit:
    """Each note of one split beside its nearest training note."""

    split: str
    notes: list[str]
    families: np.ndarray
    nearest_note: list[str | None]
    nearest_instrument: list[str | None]
    nearest_family: list[int | None]
    similarity: np.ndarray
    threshold: float
    training_kinds: frozenset[str]  # the family-source pairs of the training notes

    @property
    def twin(self) -> np.ndarray:
        return self.similarity >= self.threshold

    @property
    def unheard_kind(self) -> np.ndarray:
        """Notes whose family and source no training note shares (an electronic keyboard where every training
        keyboard is acoustic): what only a model that separates the family from the recording gets right."""
        return np.array([instrument_kind(n) not in self.training_kinds for n in self.notes], bool)

    def summary(self) -> dict:
        twin = self.twin
        pairs = Counter((instrument_of(self.notes[i]), self.nearest_instrument[i]) for i in np.flatnonzero(twin))
        finite = self.similarity[np.isfinite(self.similarity)]
        return {
            "notes": len(self.notes), "twins": int(twin.sum()), "novel": int((~twin).sum()),
            "threshold": self.threshold, "pitch_window": PITCH_WINDOW,
            "no_training_note_within_pitch_window": int((~np.isfinite(self.similarity)).sum()),
            "similarity_percentiles": {str(p): round(float(np.percentile(finite, p)), 4) for p in (10, 50, 90)}
            if len(finite) else {},
            "twin_instruments": [{"instrument": a, "training_instrument": b, "notes": n}
                                 for (a, b), n in pairs.most_common()],
            "unheard_family_source": int(self.unheard_kind.sum()),
            "novel_by_family": {FAMILIES[f]: int(((self.families == f) & ~twin).sum())
                                for f in range(len(FAMILIES)) if (self.families == f).any()},
        }

    def rows(self) -> list[dict]:
        return [{"note": n, "nearest_training_note": m, "nearest_instrument": i,
                 "similarity": round(float(s), 4) if np.isfinite(s) else None, "twin": bool(t)}
                for n, m, i, s, t in zip(self.notes, self.nearest_note, self.nearest_instrument, self.similarity,
                                         self.twin)]


def audit_against(query: NoteVectors, reference: NoteVectors, split: str,
                  threshold: float = TWIN_SIMILARITY) -> SplitAudit:
    index, similarity = nearest(query, reference)

    def pick(column):
        return [column[i] if i >= 0 else None for i in index]

    return SplitAudit(split, query.notes, query.families, pick(reference.notes), pick(reference.instruments),
                      [int(f) if f is not None else None for f in pick(reference.families)], similarity, threshold,
                      frozenset(map(instrument_kind, reference.notes)))


def instrument_kind(note: str) -> str:
    """A note name's family and source: 'keyboard_electronic' for keyboard_electronic_003-060-050."""
    return instrument_of(note).rsplit("_", 1)[0]


def training_vectors(spec: DataSpec) -> NoteVectors:
    """Every training note of a spec's data: the real ones and any --extra-train notes, with no filter or sample
    (a note left out of a smoke run's sample can still be a twin). Decoded once per process for the same folders
    and examples.json files: evaluating valid and then test, or several runs on one subset, reuses them."""
    whole = dataclasses.replace(spec, filters=Filters(), extra_ratio=None, extra_balance=False)
    listed = [JsonWavLayout(d).examples("train") for d in (whole.data_dir, *whole.extra_train) if d]
    stamps = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in listed if os.path.isfile(p))
    return _training_vectors(json.dumps(whole.to_json(), sort_keys=True), stamps)


@functools.lru_cache(maxsize=2)
def _training_vectors(spec_json: str, stamps: tuple) -> NoteVectors:
    return note_vectors(DataSpec.from_json(json.loads(spec_json)), "train")


def audit_split(spec: DataSpec, split: str) -> SplitAudit:
    """The twin audit of one split against every training note of the spec's data, at the calibrated threshold."""
    return audit_against(note_vectors(spec, split), training_vectors(spec), split)


def novel_notes(spec: DataSpec, split: str) -> frozenset[str]:
    """The notes of a split without a twin among the real training notes: the ones evaluate calls novel."""
    audit = audit_split(spec.real_only(), split)
    return frozenset(note for note, twin in zip(audit.notes, audit.twin) if not twin)
