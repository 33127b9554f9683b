"""json/wav notes -> the official NSynth TFRecord release, and the real TFDS NSynth builder run on it.

The release (what the builder downloads) is `nsynth-<split>.tfrecord.tar` holding
`nsynth-<split>.tfrecord` (one tf.train.Example per note: note_str, audio as floats, pitch,
velocity, instrument_*, qualities, ...) plus `nsynth-instrument_labels.txt`. `prepare_tfds` runs
`tfds.builder("nsynth/full")` with Apache Beam's DirectRunner; the only thing replaced is where the
download step finds those files (TFDS's own builder tests do the same). Extraction, the Beam
pipeline, feature encoding, sharding and `dataset_info.json` are the real builder's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from nsynth_keras.core.config import FAMILIES, NUM_QUALITIES, SOURCES, SPLITS
from nsynth_keras.core.errors import DataError
from nsynth_keras.core.files import atomic_path, read_json, write_json
from nsynth_keras.data.audio import read_wav
from nsynth_keras.data.notes import Filters, JsonWavLayout, read_examples

NUM_INSTRUMENT_LABELS = 1006  # the builder's instrument ClassLabel has exactly this many names
RELEASE_RECORD = "release.json"


def _feature(value) -> tf.train.Feature:
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=value))
    if isinstance(value, np.ndarray):
        return tf.train.Feature(float_list=tf.train.FloatList(value=value.tolist()))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=value if isinstance(value, list) else [value]))


def note_example(meta: dict, audio: np.ndarray) -> tf.train.Example:
    """One note as in the official release. Fields the json/wav metadata does not give (note and
    instrument ids, qualities) are left out, except qualities: the builder reads 10 values, so an
    unknown note gets 0 (absent) for each, as its examples.json implies."""
    features = {
        "note_str": meta["note_str"].encode(),
        "pitch": int(meta["pitch"]),
        "velocity": int(meta["velocity"]),
        "sample_rate": int(meta.get("sample_rate", 16000)),
        "audio": audio.astype(np.float32),
        "instrument_str": meta["instrument_str"].encode(),
        "instrument_family": int(meta["instrument_family"]),
        "instrument_family_str": meta["instrument_family_str"].encode(),
        "instrument_source": int(meta["instrument_source"]),
        "instrument_source_str": meta["instrument_source_str"].encode(),
        "qualities": [int(q) for q in meta.get("qualities") or [0] * NUM_QUALITIES],
    }
    for optional in ("note", "instrument"):
        if optional in meta:
            features[optional] = int(meta[optional])
    if meta.get("qualities_str"):
        features["qualities_str"] = [q.encode() for q in meta["qualities_str"]]
    return tf.train.Example(features=tf.train.Features(feature={k: _feature(v) for k, v in features.items()}))


def release_source(data_dir: str, max_examples: int | None, seed: int) -> dict:
    """What a release (and the TFDS folder prepared from it) was made from."""
    return {"data_dir": os.path.realpath(data_dir), "max_examples": max_examples, "seed": seed}


def write_release(data_dir: str, out: str, max_examples: int | None = None, seed: int = 0, log=print) -> dict:
    """Write the release files for every split of a json/wav folder into `out`; reuse them if they were
    written from the same folder and selection. Returns {name: path} of the files the builder downloads."""
    record = release_source(data_dir, max_examples, seed)
    files = {f"nsynth-{s}.tfrecord.tar": os.path.join(out, f"nsynth-{s}.tfrecord.tar") for s in SPLITS}
    files["nsynth-instrument_labels.txt"] = os.path.join(out, "nsynth-instrument_labels.txt")
    record_path = os.path.join(out, RELEASE_RECORD)
    if os.path.isfile(record_path) and read_json(record_path).get("source") == record and all(
            os.path.isfile(p) for p in files.values()):
        log(f"Reusing the release files in {out}")
        return files
    os.makedirs(out, exist_ok=True)
    instruments, counts = set(), {}
    for split in SPLITS:
        table = read_examples(data_dir, split, Filters(max_examples=max_examples), strict=True, seed=seed)
        with open(JsonWavLayout(data_dir).examples(split), encoding="utf-8") as f:
            metadata = json.load(f)
        with tf.io.TFRecordWriter(os.path.join(out, f"nsynth-{split}.tfrecord")) as writer:
            for i, path in enumerate(table.path, start=1):
                key = os.path.basename(path)[: -len(".wav")]
                meta = release_fields(metadata[key], table, i - 1)
                writer.write(note_example(meta, read_wav(path).waveform).SerializeToString())
                instruments.add(meta["instrument_str"])
                if i % 500 == 0:
                    log(f"  {split}: {i}/{len(table)} notes")
        # Streamed to disk (the full train split is 74 GB), under a temporary name until complete.
        with atomic_path(files[f"nsynth-{split}.tfrecord.tar"]) as tmp, tarfile.open(tmp, mode="w") as tar:
            tar.add(os.path.join(out, f"nsynth-{split}.tfrecord"), arcname=f"nsynth-{split}.tfrecord")
        os.remove(os.path.join(out, f"nsynth-{split}.tfrecord"))
        counts[split] = len(table)
        log(f"  {split}: {len(table)} notes -> nsynth-{split}.tfrecord.tar")
    if len(instruments) > NUM_INSTRUMENT_LABELS:
        raise DataError(f"{data_dir}: {len(instruments)} instruments; the TFDS NSynth builder has room for "
                        f"{NUM_INSTRUMENT_LABELS}")
    # The builder's instrument label has exactly 1,006 names (the official list). Ours: the instruments
    # present, sorted, then placeholders so the count matches; no note carries a placeholder.
    names = sorted(instruments) + [f"unlisted_{i:04d}" for i in range(NUM_INSTRUMENT_LABELS - len(instruments))]
    with open(files["nsynth-instrument_labels.txt"], "w", encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")
    write_json(record_path, {"source": record, "notes": counts, "instruments": len(instruments)})
    return files


def release_fields(meta: dict, table, i: int) -> dict:
    """A note's metadata with the fields the release needs filled from what read_examples checked
    (train accepts entries without the *_str names; the release spells every one)."""
    family, source = table.family[i], table.source[i]
    return {**meta, "note_str": table.note[i], "instrument_str": table.instrument[i], "pitch": table.pitch[i],
            "velocity": table.velocity[i], "instrument_family": family, "instrument_family_str": FAMILIES[family],
            "instrument_source": source, "instrument_source_str": SOURCES[source]}


@contextlib.contextmanager
def downloads_from(files: dict[str, str]) -> Iterator[None]:
    """Point TFDS's download step at local files (by file name); extraction stays TFDS's own."""

    def local(url: str) -> str:
        name = os.path.basename(str(url))
        if name not in files:
            raise DataError(f"the TFDS builder asked for {name}, which prepare does not write")
        return files[name]

    def download_and_extract(manager, url_or_urls):
        return manager.extract(tf.nest.map_structure(local, url_or_urls))

    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract", download_and_extract):
        yield


def prepare_tfds(data_dir: str, tfds_dir: str, config: str = "full", max_examples: int | None = None,
                 seed: int = 0, log=print) -> tfds.core.DatasetBuilder:
    """Run the real TFDS NSynth builder (Apache Beam, DirectRunner) on the release files made from a
    json/wav folder; a second run finds the prepared dataset and does nothing."""
    import apache_beam as beam  # only prepare needs Beam

    if config != "full":
        raise DataError(f"--tfds-config {config}: only 'full' can be prepared from json/wav notes (the "
                        "gansynth_subset splits come from a file of the official release)")
    builder = tfds.builder(f"nsynth/{config}", data_dir=tfds_dir)
    release = os.path.join(tfds_dir, "nsynth-release")
    source = release_source(data_dir, max_examples, seed)
    if builder.is_prepared():
        record = os.path.join(release, RELEASE_RECORD)
        made_from = read_json(record).get("source") if os.path.isfile(record) else None
        if made_from != source:
            raise DataError(f"{tfds_dir} is already prepared from other notes ("
                            + (f"{made_from['data_dir']}, max_examples {made_from['max_examples']}, seed "
                               f"{made_from['seed']}" if made_from else f"no {RELEASE_RECORD}: not by prepare")
                            + f"; now {source['data_dir']}, max_examples {max_examples}, seed {seed}): "
                            "choose another --tfds-dir")
        log(f"{builder.data_dir} is already prepared from the same notes")
        return builder
    files = write_release(data_dir, release, max_examples, seed, log)
    options = beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1"])
    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # its DirectRunner warnings are not for users
    log(f"Running the TFDS nsynth/{config} builder (Apache Beam DirectRunner) into {tfds_dir}")
    with downloads_from(files):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            beam_options=options, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    return builder
