"""The twin audit: nearest training notes within a pitch window, the calibrated threshold on the real subset,
the audit command, and novel / other-copy accuracy in every evaluation."""

from __future__ import annotations

import json
import os

import numpy as np

from nsynth_keras import audit
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.notes import instrument_of
from nsynth_keras.data.twins import (
    TWIN_SIMILARITY,
    NoteVectors,
    audit_against,
    instrument_kind,
    nearest,
    note_vectors,
    training_vectors,
)
from nsynth_keras.reports.evaluation import copies_of


def vectors(pitches, rows) -> NoteVectors:
    v = np.asarray(rows, np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    n = len(rows)
    return NoteVectors([f"i{k}-{p:03d}-100" for k, p in enumerate(pitches)], [f"i{k}" for k in range(n)],
                       np.asarray(pitches), np.zeros(n, np.int32), v)


def test_nearest_looks_only_within_the_pitch_window():
    reference = vectors([60, 70], [[1, 0], [0, 1]])
    query = vectors([61, 70, 90], [[0, 1], [0, 1], [1, 0]])
    index, similarity = nearest(query, reference, pitch_window=2)
    assert index.tolist() == [0, 1, -1]  # the first matches [0, 1] better but only pitch 60 is within 2 semitones
    assert similarity[0] == 0 and similarity[1] == 1 and similarity[2] == -np.inf


def test_the_threshold_separates_known_twins_from_other_families(data_dir):
    """Calibration, checked on the real subset: no valid/test note's nearest training note of another family
    reaches the threshold, and every note of the known twin instruments that has a training note within the
    pitch window does."""
    spec = DataSpec(data_dir=data_dir)
    reference = training_vectors(spec)
    for split in ("valid", "test"):
        a = audit_against(note_vectors(spec, split), reference, split)
        other_family = np.array([f is not None and f != y for f, y in zip(a.nearest_family, a.families)])
        assert a.similarity[other_family].max() < TWIN_SIMILARITY
        for known in ("mallet_acoustic_047", "string_acoustic_057"):
            rows = [i for i, n in enumerate(a.notes) if n.startswith(known) and np.isfinite(a.similarity[i])]
            assert rows and a.twin[rows].all(), (split, known)
        assert 0 < a.twin.sum() < len(a.notes) / 2
        # Every training family has one source here; the test notes of other sources all come from other copies.
        unheard = [n for n, u in zip(a.notes, a.unheard_kind) if u]
        copies = copies_of(data_dir)
        assert len(unheard) == (20 if split == "test" else 0), unheard
        assert all("vtan05/gct634" not in copies[split, n] for n in unheard)


def test_unheard_kinds_are_the_family_source_pairs_no_training_note_has():
    def named(notes):
        return NoteVectors(notes, [instrument_of(n) for n in notes], np.full(len(notes), 60),
                           np.zeros(len(notes), np.int32), np.eye(len(notes), 3, dtype=np.float32))

    reference = named(["keyboard_acoustic_000-060-100", "bass_electronic_001-060-100"])
    query = named(["keyboard_electronic_003-060-050", "keyboard_acoustic_009-060-075",
                   "synth_lead_synthetic_002-060-127"])
    a = audit_against(query, reference, "test")
    assert instrument_kind("synth_lead_synthetic_002-060-127") == "synth_lead_synthetic"
    assert a.unheard_kind.tolist() == [True, False, True]
    assert a.summary()["unheard_family_source"] == 2


def test_the_audit_command_lists_twin_instruments_and_writes_its_files(data_dir, tmp_path, capsys):
    out_json, out_png = tmp_path / "audit.json", tmp_path / "audit.png"
    assert audit.main(["--data-dir", data_dir, "--json", str(out_json), "--plot", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "string_acoustic_057" in text and "string_acoustic_006" in text
    record = json.load(open(out_json))
    test = record["splits"]["test"]
    assert test["summary"]["notes"] == 260 == len(test["notes"])
    assert test["summary"]["twins"] + test["summary"]["novel"] == 260
    assert sum(r["twin"] for r in test["notes"]) == test["summary"]["twins"]
    assert os.path.getsize(out_png) > 10_000
    assert audit.main(["--data-dir", data_dir, "--json", str(tmp_path)]) == 2  # a folder: refused before work
    assert "--json" in capsys.readouterr().err
