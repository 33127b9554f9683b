import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from nsynth_keras.core.config import NUM_SAMPLES
from nsynth_keras.core.errors import DataError
from nsynth_keras.data.datasets import DataSpec, make_dataset, tfds_dataset
from nsynth_keras.data.notes import Filters, read_examples

ELEMENT_DTYPES = {"audio": tf.float32, "family": tf.int32, "source": tf.int32, "pitch": tf.int32,
                  "velocity": tf.int32, "note": tf.string, "instrument": tf.string}


def check_element(ex: dict) -> None:
    assert {k: v.dtype for k, v in ex.items()} == ELEMENT_DTYPES
    assert ex["audio"].shape == (NUM_SAMPLES,)


def test_jsonwav_elements_carry_the_labels_of_examples_json(data_dir, examples):
    data = make_dataset(DataSpec(data_dir=data_dir), "train")
    assert data.num_examples == len(examples) == 993 and data.skipped == []
    for ex in data.dataset.take(5):
        check_element(ex)
        meta = examples[ex["note"].numpy().decode()]
        assert int(ex["family"]) == meta["instrument_family"]
        assert int(ex["pitch"]) == meta["pitch"]
        assert ex["instrument"].numpy().decode() == meta["instrument_str"]
        assert float(tf.reduce_max(tf.abs(ex["audio"]))) > 0.0


def test_shuffled_file_list_mixes_families_and_reshuffles_each_epoch(data_dir):
    ds = make_dataset(DataSpec(data_dir=data_dir), "train", shuffle=True, seed=3).dataset
    epoch1 = [n.numpy() for n in ds.map(lambda e: e["note"]).take(32)]
    epoch2 = [n.numpy() for n in ds.map(lambda e: e["note"]).take(32)]
    assert epoch1 != epoch2
    families = {n.split(b"_")[0] for n in epoch1}
    assert len(families) >= 6  # stored order would give one family per 32 notes
    ordered = [n.numpy() for n in make_dataset(DataSpec(data_dir=data_dir), "train").dataset
               .map(lambda e: e["note"]).take(32)]
    assert len({n.split(b"_")[0] for n in ordered}) == 1


def test_a_shuffled_pass_is_a_permutation_of_the_split_and_the_seed_repeats_it(data_dir):
    """The order is computed per position (nothing buffered): every note exactly once a pass; the same seed gives
    the same passes in a new dataset, another seed another order."""
    def passes(seed, n=2):
        notes = make_dataset(DataSpec(data_dir=data_dir), "valid", shuffle=True, seed=seed).dataset
        notes = notes.map(lambda e: e["note"])
        return [[x.numpy() for x in notes] for _ in range(n)]

    stored = [x.numpy() for x in make_dataset(DataSpec(data_dir=data_dir), "valid").dataset.map(lambda e: e["note"])]
    first, second = passes(5)
    assert sorted(first) == sorted(second) == sorted(stored) and len(set(first)) == len(stored) == 200
    assert first != second != stored
    assert passes(5) == [first, second] and passes(6, 1)[0] != first


def test_filters_and_max_examples(data_dir):
    table = read_examples(data_dir, "valid", Filters(sources=("acoustic",), pitch_min=40, pitch_max=70))
    assert len(table) > 0 and set(table.source) == {0} and min(table.pitch) >= 40 and max(table.pitch) <= 70
    a = read_examples(data_dir, "train", Filters(max_examples=50), seed=1)
    b = read_examples(data_dir, "train", Filters(max_examples=50), seed=1)
    assert len(a) == 50 and a.note == b.note and len(set(a.family)) >= 8


def test_missing_data_dir_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass --data-dir"):
        make_dataset(DataSpec(data_dir=str(tmp_path / "nope")), "train")


def test_bad_entries_are_skipped_and_counted_or_stop_with_strict(data_dir, examples, tmp_path):
    split = tmp_path / "nsynth-train"
    (split / "audio").mkdir(parents=True)
    keys = list(examples)[:3]
    for k in keys:
        shutil.copy(os.path.join(data_dir, "nsynth-train", "audio", f"{k}.wav"), split / "audio")
    entries = {k: examples[k] for k in keys}
    entries["guitar_acoustic_999-060-100"] = dict(examples[keys[0]], note_str="guitar_acoustic_999-060-100")
    entries["broken"] = {"pitch": 60}
    (split / "examples.json").write_text(json.dumps(entries))
    table = read_examples(str(tmp_path), "train")
    assert len(table) == 3 and len(table.skipped) == 2
    assert any("guitar_acoustic_999-060-100.wav: file not found" in s for s in table.skipped)
    assert any("'broken'" in s for s in table.skipped)
    with pytest.raises(DataError, match="file not found|'broken'"):
        read_examples(str(tmp_path), "train", strict=True)


def test_tfds_source_on_mock_data_gives_the_same_element():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        ds = tfds_dataset("train", config="full")
        items = list(ds)
        assert len(items) == 6
        for ex in items:
            check_element(ex)
            assert 0 <= int(ex["family"]) < 11 and 0 <= int(ex["source"]) < 3
        acoustic = list(tfds_dataset("valid", filters=Filters(sources=("acoustic",))))
        assert all(int(ex["source"]) == 0 for ex in acoustic)
        assert len(list(tfds_dataset("test", filters=Filters(max_examples=2)))) == 2


def test_tfds_not_prepared_gives_one_clear_sentence(tmp_path):
    with pytest.raises(DataError, match="not prepared.*--source jsonwav --data-dir"):
        tfds_dataset("train", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="unknown TFDS nsynth config 'bogus'"):
        tfds_dataset("train", config="bogus", data_dir=str(tmp_path))


def test_feature_batches_from_the_real_subset(data_dir):
    from nsynth_keras.data.pipeline import split_features

    ds, data = split_features(DataSpec(data_dir=data_dir, filters=Filters(max_examples=40)), "test", 16)
    x, y = next(iter(ds))
    assert x.shape == (16, 64, 64, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert np.all(np.isfinite(x.numpy()))
    assert sum(int(b[1].shape[0]) for b in ds) == data.num_examples == 40


def test_a_file_cache_is_written_one_file_per_chunk_and_replayed_without_the_wavs(tiny_nsynth, tmp_path,
                                                                                   monkeypatch):
    """TensorFlow's cache writer holds memory for every note until its file is done, so a big split is cached in
    chunks: one file each, every note once, and a second pass reads the files (the wavs may be gone)."""
    from nsynth_keras.data import pipeline

    monkeypatch.setattr(pipeline, "CACHE_CHUNK", 4)
    spec, cache = DataSpec(data_dir=tiny_nsynth), tmp_path / "cache"
    (batches, in_order), data = pipeline.split_feature_batches(spec, "train", 2, training=True, seed=1,
                                                                cache_dir=str(cache))
    # No note's path is a constant of the pipeline's graph (tf.data's rewrites would copy every one of them): each
    # chunk streams its notes from a list file beside its cache.
    assert b"nsynth-train" not in batches._as_serialized_graph().numpy()
    assert len(list(cache.glob("train-*/features-*.notes.tfrecord"))) == 2
    first = [(x.numpy(), y.numpy()) for x, y in in_order]
    assert len(list(cache.glob("train-*/features-*.index"))) == 2  # 6 notes in chunks of 4
    assert sorted(np.concatenate([y for _, y in first])) == sorted(data.families)
    shutil.rmtree(os.path.join(tiny_nsynth, "nsynth-train", "audio"))
    for note_list in cache.glob("train-*/*.notes.tfrecord"):
        note_list.unlink()  # only a cache still to be written reads its list
    again = [(x.numpy(), y.numpy()) for x, y in in_order]
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(first, again)) and len(again) == 3
    shuffled = np.concatenate([x for x, _ in batches])  # the training batches: the same cached notes, reshuffled
    assert sorted(shuffled.sum(axis=(1, 2, 3))) == pytest.approx(sorted(np.concatenate([x for x, _ in first])
                                                                        .sum(axis=(1, 2, 3))))
