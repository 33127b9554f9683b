"""The real TFDS NSynth builder (Apache Beam DirectRunner) run on real notes, and training from its output."""

import json
import os

import numpy as np
import pytest

from nsynth_keras import evaluate, prepare, train
from nsynth_keras.data.datasets import DataSpec, make_dataset, tfds_dataset
from nsynth_keras.data.notes import Filters

NOTES = 12  # per split: a seeded sample of the shared subset


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    pytest.importorskip("apache_beam", reason="Apache Beam runs the TFDS builder: pip install --no-deps -r "
                                              "requirements.txt")
    tfds_dir = str(tmp_path_factory.mktemp("tfds"))
    assert prepare.main(["--data-dir", data_dir, "--tfds-dir", tfds_dir, "--max-examples", str(NOTES)]) == 0
    return tfds_dir


def test_the_builder_prepares_real_splits_and_a_second_run_reuses_them(prepared, data_dir, capsys):
    import tensorflow_datasets as tfds

    builder = tfds.builder("nsynth/full", data_dir=prepared)
    assert builder.is_prepared()
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": NOTES, "valid": NOTES,
                                                                            "test": NOTES}
    release = json.load(open(os.path.join(prepared, "nsynth-release", "release.json")))
    assert release["notes"] == {"train": NOTES, "valid": NOTES, "test": NOTES}
    assert builder.info.features["instrument"]["label"].num_classes == 1006
    capsys.readouterr()
    assert prepare.main(["--data-dir", data_dir, "--tfds-dir", prepared, "--max-examples", str(NOTES)]) == 0
    assert "already prepared" in capsys.readouterr().out


def test_tfds_elements_equal_the_jsonwav_elements_note_for_note(prepared, data_dir):
    for split in ("train", "test"):
        ours = {ex["note"].numpy(): ex for ex in make_dataset(
            DataSpec(data_dir=data_dir, filters=Filters(max_examples=NOTES)), split).dataset}
        theirs = {ex["note"].numpy(): ex for ex in tfds_dataset(split, data_dir=prepared)}
        assert set(ours) == set(theirs) and len(ours) == NOTES
        for note, a in ours.items():
            b = theirs[note]
            np.testing.assert_allclose(b["audio"].numpy(), a["audio"].numpy(), atol=1 / 32768)
            for key in ("family", "source", "pitch", "velocity", "instrument"):
                assert b[key].numpy() == a[key].numpy(), (note, key)


def test_train_and_evaluate_from_the_prepared_dataset(prepared, tmp_path, capsys):
    common = ["--source", "tfds", "--data-dir", prepared]
    assert train.main([*common, "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path), "--run-name", "tfds",
                       "--no-tflite"]) == 0
    cfg = json.load(open(tmp_path / "tfds" / "config.json"))
    assert cfg["data"]["source"] == "tfds" and cfg["notes"] == {"train": NOTES, "valid": NOTES, "test": NOTES}
    assert evaluate.main([str(tmp_path / "tfds"), *common, "--split", "test"]) == 0
    assert json.load(open(tmp_path / "tfds" / "eval_test.json"))["num_notes"] == NOTES


def test_a_folder_prepared_from_other_notes_is_refused_not_reused(prepared, data_dir, capsys):
    assert prepare.main(["--data-dir", data_dir, "--tfds-dir", prepared, "--max-examples", str(NOTES + 1)]) == 2
    err = capsys.readouterr().err
    assert "is already prepared from other notes" in err and f"max_examples {NOTES}" in err
    assert "choose another --tfds-dir" in err
