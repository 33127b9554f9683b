"""NSynth sources -> a tf.data.Dataset of notes (the one entry point: ``make_dataset(spec, split)``).

Every source yields the same element, a dict of
``audio`` float32 [64000], ``family`` int32, ``source`` int32, ``pitch`` int32,
``velocity`` int32, ``note`` string and ``instrument`` string.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import tensorflow as tf

from nsynth_keras.core.config import DEFAULT_DATA_DIR, NUM_SAMPLES, SOURCES, SPLITS
from nsynth_keras.core.errors import DataError
from nsynth_keras.core.files import atomic_path
from nsynth_keras.core.settings import from_dict, setting
from nsynth_keras.data.audio import read_wav
from nsynth_keras.data.leakage import without_overlap
from nsynth_keras.data.notes import DATA, EXTRA, Filters, NoteTable, checked, read_examples

log = logging.getLogger(__name__)

TFDS_CONFIGS = ("full", "gansynth_subset", "gansynth_subset.f0_and_loudness")
# Log-mels in the buffer that reshuffles a cached split each epoch (and TFDS notes). The cache holds the first pass's
# random order, so the buffer only varies it from epoch to epoch: 1,000 (16 MB) did that, where 10,000 (160 MB) also
# grew a training process's memory with every note that passed through it (about 4 KiB a note; bench/scale.py).
SHUFFLE_BUFFER = 1_000
# --source NAME -> NoteSource (filled at the end of this module). Adding a source: a function
# (spec, split, shuffle, seed, shard, part) -> SplitData and an entry in NOTE_SOURCES.
NOTE_SOURCES: dict[str, NoteSource] = {}


def table_dataset(table: NoteTable, *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Stream the notes of a NoteTable, decoding wavs inside the pipeline."""
    return columns_dataset(table_columns(table), shuffle=shuffle, seed=seed)


# A NoteTable's columns as the note datasets carry them (paths and labels; each note's audio is decoded from its path)
COLUMN_DTYPES = {"path": tf.string, "standard": tf.bool, "note": tf.string, "instrument": tf.string,
                 "family": tf.int32, "source": tf.int32, "pitch": tf.int32, "velocity": tf.int32}


def table_columns(table: NoteTable) -> dict[str, tf.Tensor]:
    """A NoteTable's columns as tensors: what the note datasets read from (paths and labels, no audio)."""
    return {name: tf.constant(getattr(table, name), dtype) for name, dtype in COLUMN_DTYPES.items()}


def columns_dataset(columns: dict[str, tf.Tensor], *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """The notes of ``columns``, decoded; shuffled: a new order each pass."""
    n = int(columns["path"].shape[0])
    if not shuffle:
        return _notes_at(tf.data.Dataset.range(n), columns)
    # NSynth is stored ordered by instrument, so a shuffle buffer after decoding would leave whole batches of
    # one family: shuffle the file list instead, over all of it, with a new order each pass. Each position is
    # computed (index_shuffle), so nothing is buffered: with a shuffle buffer of the whole list, a 300,000-note
    # list took 1,421 bytes a note, now 441 (bench/pipeline.py).
    pass_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    pass_seeds = pass_seeds.batch(2, drop_remainder=True).take(1)  # a new [2] seed for each pass
    positions = pass_seeds.flat_map(lambda pass_seed: _permuted(tf.data.Dataset.range(n), pass_seed, n))
    # flat_map hides the length, which Keras needs for its progress bar and TensorFlow for its caches
    return _notes_at(positions, columns).apply(tf.data.experimental.assert_cardinality(n))


def chunk_name(prefix: str, index: int) -> str:
    """Where chunk ``index`` of a split cached under ``prefix`` keeps its log-mel cache (TensorFlow adds .index and
    .data-*) and, with NOTE_LIST added, the list of its notes."""
    return f"{prefix}-{index:04d}"


NOTE_LIST = ".notes.tfrecord"


def table_chunks(table: NoteTable, size: int, prefix: str, *, shuffle: bool = False,
                 seed: int = 0) -> list[tuple[tf.data.Dataset, str]]:
    """The notes of ``table`` in consecutive chunks of at most ``size`` over one order that every pass repeats
    (shuffled: fixed by ``seed``), each with its chunk_name: what a file cache is written from, one file per chunk.

    Each chunk streams its notes from a list file beside its cache (written here unless the cache is finished), so
    that no path or label sits in the dataset graph: tf.data's graph rewrites copy every tensor a pipeline captures,
    which grew a 100,000-note training process by about 1 KiB a note (bench/scale.py)."""
    n = len(table)
    order = np.arange(n)
    if shuffle:  # the order columns_dataset's first pass would take, computed at once
        order = tf.random.experimental.index_shuffle(tf.range(n, dtype=tf.int64), tf.constant([seed, 0], tf.int64),
                                                      max(n - 1, 0)).numpy()
    chunks = []
    for index, start in enumerate(range(0, n, size)):
        name = chunk_name(prefix, index)
        rows = order[start:start + size]
        if not os.path.exists(name + ".index"):  # TensorFlow's file cache writes it when the cache is complete
            write_note_list(name + NOTE_LIST, table, rows)  # 2 s for 100,000 notes
        notes = tf.data.TFRecordDataset(name + NOTE_LIST).map(
            lambda record: _decode_row(_note_list_row(record)), num_parallel_calls=tf.data.AUTOTUNE)
        chunks.append((notes.apply(tf.data.experimental.assert_cardinality(len(rows))), name))
    return chunks


def write_note_list(path: str, table: NoteTable, rows) -> None:
    """The notes ``rows`` of ``table``, in that order, as a TFRecord file of tf.train.Example (written atomically):
    the COLUMN_DTYPES columns, strings as bytes and the rest as int64."""
    def feature(value, dtype: tf.DType) -> tf.train.Feature:
        if dtype == tf.string:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    with atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
        for i in rows:
            example = tf.train.Example(features=tf.train.Features(
                feature={name: feature(getattr(table, name)[i], dtype) for name, dtype in COLUMN_DTYPES.items()}))
            writer.write(example.SerializeToString())


def _note_list_row(record: tf.Tensor) -> dict:
    stored = {name: tf.string if dtype == tf.string else tf.int64 for name, dtype in COLUMN_DTYPES.items()}
    row = tf.io.parse_single_example(record, {name: tf.io.FixedLenFeature([], dtype) for name, dtype in stored.items()})
    return {name: tf.cast(row[name], dtype) for name, dtype in COLUMN_DTYPES.items()}


def _permuted(positions: tf.data.Dataset, seed: tf.Tensor, n: int) -> tf.data.Dataset:
    return positions.map(lambda i: tf.random.experimental.index_shuffle(i, seed, max(n - 1, 0)))


def _notes_at(positions: tf.data.Dataset, columns: dict[str, tf.Tensor]) -> tf.data.Dataset:
    return positions.map(lambda i: _decode_row({name: column[i] for name, column in columns.items()}),
                         num_parallel_calls=tf.data.AUTOTUNE)


def _decode_row(row: dict) -> dict:
    audio = tf.cond(row.pop("standard"), lambda: _decode_fast(row["path"]), lambda: _decode_slow(row["path"]))
    row["audio"] = audio
    row.pop("path")
    return row


def _decode_fast(path: tf.Tensor) -> tf.Tensor:
    wave, _ = tf.audio.decode_wav(tf.io.read_file(path), desired_channels=1)
    return fit_length(wave[:, 0])


def _decode_slow(path: tf.Tensor) -> tf.Tensor:
    wave = tf.py_function(lambda p: read_wav(p.numpy().decode()).waveform, [path], tf.float32)
    return tf.ensure_shape(wave, [NUM_SAMPLES])


def fit_length(wave: tf.Tensor) -> tf.Tensor:
    """Crop or zero-pad a 1-D waveform to NUM_SAMPLES."""
    wave = wave[:NUM_SAMPLES]
    wave = tf.pad(wave, [[0, NUM_SAMPLES - tf.shape(wave)[0]]])
    return tf.ensure_shape(wave, [NUM_SAMPLES])


# --------------------------------------------------------------------------- TFDS


def tfds_dataset(
    split: str,
    *,
    config: str = "full",
    data_dir: str | None = None,
    filters: Filters | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """NSynth from tensorflow-datasets (``nsynth/<config>``), already prepared in data_dir."""
    import tensorflow_datasets as tfds  # 0.4 s to import, and only the tfds source needs it

    filters = filters or Filters()
    if config not in TFDS_CONFIGS:
        raise DataError(f"unknown TFDS nsynth config {config!r}; choose one of {', '.join(TFDS_CONFIGS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    try:
        ds = tfds.load(
            f"nsynth/{config}",
            split=split,
            data_dir=data_dir,
            download=False,
            shuffle_files=shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=seed) if shuffle else None,
        )
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as err:
        where = data_dir or "the default TFDS folder (~/tensorflow_datasets)"
        raise DataError(
            f"TFDS nsynth/{config} is not prepared in {where} ({type(err).__name__}). Either prepare it "
            "once (python -m nsynth_keras.prepare from json/wav notes, or tfds build nsynth/full at full "
            "scale: README 'Full NSynth and many machines') and pass its folder as --data-dir, or use the "
            "json/wav release: "
            "--source jsonwav --data-dir <folder with nsynth-train/ nsynth-valid/ nsynth-test/>"
        ) from None

    def to_element(ex: dict) -> dict:
        note = ex["id"]
        return {
            "audio": fit_length(tf.cast(ex["audio"], tf.float32)),
            "family": tf.cast(ex["instrument"]["family"], tf.int32),
            "source": tf.cast(ex["instrument"]["source"], tf.int32),
            "pitch": tf.cast(ex["pitch"], tf.int32),
            "velocity": tf.cast(ex["velocity"], tf.int32),
            "note": note,
            "instrument": tf.strings.regex_replace(note, r"-\d+-\d+$", ""),
        }

    ds = ds.map(to_element, num_parallel_calls=tf.data.AUTOTUNE)
    keep = _tf_filter(filters)
    if keep is not None:
        ds = ds.filter(keep)
    if shuffle:
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    if filters.max_examples is not None:
        ds = ds.take(filters.max_examples)
    return ds


def _tf_filter(filters: Filters):
    if filters.sources is None and filters.pitch_min is None and filters.pitch_max is None:
        return None
    allowed = tf.constant([s in (filters.sources or SOURCES) for s in SOURCES])
    lo = -1 if filters.pitch_min is None else filters.pitch_min
    hi = 1_000 if filters.pitch_max is None else filters.pitch_max

    def keep(ex: dict) -> tf.Tensor:
        return tf.gather(allowed, ex["source"]) & (ex["pitch"] >= lo) & (ex["pitch"] <= hi)

    return keep


# --------------------------------------------------------------------------- one entry point


@dataclass
class DataSpec:
    """Where notes come from: the same flags in every command (declared here, once)."""

    source: str = setting("jsonwav", "jsonwav: the official NSynth json/wav layout; tfds: a prepared "
                                     "tensorflow-datasets nsynth", choices=NOTE_SOURCES, group=DATA)
    data_dir: str | None = setting(DEFAULT_DATA_DIR, "json/wav: folder holding nsynth-{train,valid,test}/; tfds: "
                                                     "the TFDS data_dir", group=DATA)
    tfds_config: str = setting("full", "TFDS nsynth config", choices=TFDS_CONFIGS, group=DATA)
    filters: Filters = field(default_factory=Filters)
    strict: bool = setting(False, "stop at the first bad note instead of skipping it", group=DATA)
    # Extra json/wav folders (e.g. rendered notes) mixed into the train split only, never valid/test.
    extra_train: tuple[str, ...] = setting((), "json/wav folders whose nsynth-train/ notes are mixed into "
                                               "training", metavar="DIR", group=EXTRA)
    extra_ratio: float | None = setting(None, "use at most R extra notes per real training note, a seeded sample "
                                              "(none: all)", metavar="R", group=EXTRA, above=0)
    extra_balance: bool = setting(False, "sample the extra notes evenly over families (within --extra-ratio if "
                                         "given)", group=EXTRA)
    # Extra notes that overlap valid/test (note name, instrument or audio): refused, or with this dropped.
    drop_overlap: bool = setting(False, "leave out extra notes that overlap valid/test (note name, instrument or "
                                        "identical audio) and count them in config.json (default: refuse to "
                                        "train with any overlap)", group=EXTRA)
    # json/wav folders whose nsynth-valid notes (rendered instruments held out of training, not NSynth) join
    # the real valid notes to choose checkpoints: a selection set that covers every family.
    select_extra: tuple[str, ...] = setting((), "json/wav folders whose nsynth-valid notes (rendered instruments "
                                                "held out of training) join the real valid notes to choose the "
                                                "best epoch; scored apart, as not NSynth", metavar="DIR",
                                            group=EXTRA)
    EXTRA_FIELDS = ("extra_train", "extra_ratio", "extra_balance", "drop_overlap", "select_extra")

    def real_only(self) -> DataSpec:
        """The same notes without any extra folder: what valid and test are scored against."""
        return DataSpec(self.source, self.data_dir, self.tfds_config, self.filters, self.strict)

    def to_json(self) -> dict:
        """The spec as a run records it (config.json "data"): folders made absolute, the filters' fields inline."""
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "filters"}
        record.update(data_dir=os.path.abspath(self.data_dir) if self.data_dir else None,
                      extra_train=[os.path.abspath(d) for d in self.extra_train],
                      select_extra=[os.path.abspath(d) for d in self.select_extra],
                      instrument_sources=list(self.filters.sources) if self.filters.sources else None,
                      **{k: getattr(self.filters, k) for k in FILTER_KEYS})
        return record

    @classmethod
    def from_json(cls, d: dict, where: str = "data.") -> DataSpec:
        """The inverse of to_json (a spec recorded in a run or a tuning project), checked key by key like the
        flags (ValueError naming the key)."""
        if not isinstance(d, dict):
            raise ValueError(f"{where.rstrip('.')}: expected a JSON object")
        d = dict(d)
        recorded = {"sources": d.pop("instrument_sources", None)}
        recorded.update({k: d.pop(k) for k in FILTER_KEYS if k in d})
        try:
            filters = from_dict(Filters, recorded, where)
        except ValueError as err:
            raise ValueError(str(err).replace(f"{where}sources", f"{where}instrument_sources")) from None
        return from_dict(cls, {**d, "filters": filters}, where)


FILTER_KEYS = ("pitch_min", "pitch_max", "max_examples")  # Filters' fields that DataSpec.to_json records by name


@dataclass
class SplitData:
    """A split's note dataset plus what a run should record about it."""

    # the note dataset, made when first read (``dataset``): a caller that streams the chunks never holds its tensors
    make_notes: Callable[[], tf.data.Dataset]
    num_examples: int | None  # None where the source cannot tell cheaply (TFDS with filters)
    skipped: list[str]
    families: list[int] | None = None  # every note's family, where known without decoding
    parts: dict[str, int] = field(default_factory=dict)  # notes from each folder (train: the data dir + extras)
    overlap_dropped: list[str] = field(default_factory=list)  # extra notes dropped as overlapping valid/test
    # chunks(N, prefix): the notes in consecutive chunks of at most N over one fixed order, each with its
    # chunk_name under prefix, where the source can: one cache file per chunk (TensorFlow's cache writer holds
    # about 6 KiB a note in memory until its file is done)
    chunks: Callable[[int, str], list[tuple[tf.data.Dataset, str]]] | None = None

    @functools.cached_property
    def dataset(self) -> tf.data.Dataset:
        return self.make_notes()


TRAIN_PARTS = ("all", "real", "extra")


@dataclass(frozen=True)
class NoteSource:
    """A data source (--source NAME): how to make a split's SplitData, and whether it is a list of files
    (split between workers before decoding) or sharded files that tf.distribute splits itself."""

    make: Callable[..., SplitData]
    file_list: bool


def make_dataset(
    spec: DataSpec, split: str, *, shuffle: bool = False, seed: int = 0, shard: tuple[int, int] | None = None,
    part: str = "all",
) -> SplitData:
    """The note dataset of one split from the source a DataSpec names.

    The train split also holds the notes of ``spec.extra_train`` (``part``: "all", or only the
    "real" or only the "extra" notes); the valid split those of ``spec.select_extra``.
    ``shard=(num_workers, index)`` splits a file list between workers before decoding. TFDS datasets
    are left whole: tf.distribute shards their TFRecord files (AutoShardPolicy.FILE).
    """
    if part not in TRAIN_PARTS:
        raise DataError(f"unknown part {part!r}; choose one of {', '.join(TRAIN_PARTS)}")
    if spec.source not in NOTE_SOURCES:
        raise DataError(f"unknown source {spec.source!r}; choose {' or '.join(NOTE_SOURCES)}")
    return NOTE_SOURCES[spec.source].make(spec, split, shuffle=shuffle, seed=seed, shard=shard, part=part)


def jsonwav_split(spec: DataSpec, split: str, *, shuffle: bool, seed: int, shard: tuple[int, int] | None,
                  part: str) -> SplitData:
    """A split of the official json/wav layout, plus the extra folders' notes."""
    # Extra folders: training notes for the train split, held-out selection notes for valid, none for test.
    extras = (extra_folders(spec) if split == "train" else extra_folders(spec, "--select-extra") if split == "valid"
              else ())
    for folder in extras:
        if not os.path.isdir(folder):
            flag = "--extra-train" if split == "train" else "--select-extra"
            raise DataError(f"{flag} folder {folder} does not exist (a json/wav folder with nsynth-{split}/, "
                            "e.g. from python -m nsynth_keras.render)")
    parts: dict[str, NoteTable] = {}
    dropped: list[str] = []
    if part != "extra":
        parts[spec.data_dir] = read_examples(spec.data_dir, split, spec.filters, strict=spec.strict, seed=seed)
    if part != "real" and extras and split == "train":
        # A ratio needs the real notes' count: read (and check) them only if they are not read already.
        real = (len(parts[spec.data_dir]) if spec.data_dir in parts
                else len(read_examples(spec.data_dir, split, spec.filters, seed=seed)) if spec.extra_ratio else 0)
        tables, dropped = without_overlap(spec, extra_tables(spec, real, seed))
        parts.update(tables)
    elif part != "real" and extras:
        # Selection notes choose the best epoch: a note of valid or test among them would choose it on
        # held-out notes (or count valid twice), so they pass the same check as extra training notes.
        tables, dropped = without_overlap(spec, {d: read_examples(d, split, spec.filters, strict=spec.strict)
                                                 for d in extras}, "--select-extra notes")
        parts.update(tables)
    if part == "extra" and not extras:
        raise DataError(f"no extra folders to take extra {split} notes from (--extra-train for train, "
                        "--select-extra for valid)")
    table = NoteTable.concat(list(parts.values()))
    if table.skipped:
        log.warning("%d bad notes skipped in split %s", len(table.skipped), split)
    if shard is not None:
        table = table.shard(*shard)
    return SplitData(functools.partial(table_dataset, table, shuffle=shuffle, seed=seed), len(table), table.skipped,
                     table.family, {os.path.abspath(d): len(t) for d, t in parts.items()}, dropped,
                     functools.partial(table_chunks, table, shuffle=shuffle, seed=seed))


def tfds_split(spec: DataSpec, split: str, *, shuffle: bool, seed: int, shard: tuple[int, int] | None,
               part: str) -> SplitData:
    """A split of a prepared TFDS nsynth (no extra folders: they are json/wav)."""
    if spec.extra_train or spec.select_extra:
        raise DataError("--extra-train and --select-extra folders are json/wav; they mix with --source jsonwav only")
    ds = tfds_dataset(
        split, config=spec.tfds_config, data_dir=spec.data_dir, filters=spec.filters, shuffle=shuffle, seed=seed
    )
    n = int(ds.cardinality()) if ds.cardinality() >= 0 else None
    return SplitData(lambda: ds, n, [])


NOTE_SOURCES.update(jsonwav=NoteSource(jsonwav_split, file_list=True), tfds=NoteSource(tfds_split, file_list=False))


def extra_folders(spec: DataSpec, flag: str = "--extra-train") -> tuple[str, ...]:
    """The --extra-train (or --select-extra) folders, checked: compared by resolved path, never the data dir
    itself, never twice."""
    seen: dict[str, str] = {}
    data = os.path.realpath(spec.data_dir) if spec.data_dir else None
    folders = spec.extra_train if flag == "--extra-train" else spec.select_extra
    for folder in folders:
        real = os.path.realpath(folder)
        if real == data:
            raise DataError(f"{flag} {folder} is the --data-dir itself: its notes are already used; pass only "
                            "other folders")
        if real in seen:
            raise DataError(f"{flag} lists one folder twice ({seen[real]} and {folder})")
        seen[real] = folder
    return tuple(folders)


def extra_tables(spec: DataSpec, num_real: int, seed: int = 0) -> dict[str, NoteTable]:
    """The extra training folders' notes, sampled as the spec says (a ratio of the real notes,
    evenly over families), seeded. Only the sampled notes' wavs are checked: a folder of 100,000 rendered notes
    sampled to 10,000 costs 10,000 header reads, not 100,000 (a bad note in the sample is skipped, not replaced)."""
    tables = {d: read_examples(d, "train", spec.filters, strict=spec.strict, seed=seed, check=False)
              for d in extra_folders(spec)}

    def usable(folder: str, table: NoteTable) -> NoteTable:
        kept = checked(table, spec.strict)
        if len(table) and not len(kept):
            raise DataError(f"no usable notes in {folder}: all {len(table)} checked were skipped ({kept.skipped[0]})")
        return kept

    if spec.extra_ratio is None and not spec.extra_balance:
        return {d: usable(d, t) for d, t in tables.items()}
    rows = [(d, i) for d, t in tables.items() for i in range(len(t))]
    families = np.array([tables[d].family[i] for d, i in rows])
    budget = len(rows) if spec.extra_ratio is None else min(len(rows), int(round(spec.extra_ratio * num_real)))
    if budget < 1:
        raise DataError(f"--extra-ratio {spec.extra_ratio} x {num_real} real training notes selects no extra note: "
                        f"use at least {0.5 / max(num_real, 1):.3g}")
    rng = np.random.default_rng(seed)
    if spec.extra_balance:
        present = np.unique(families)
        per_family = max(1, budget // len(present))
        chosen = np.concatenate([rng.permutation(np.flatnonzero(families == f))[:per_family] for f in present])
    else:
        chosen = rng.permutation(len(rows))[:budget]
    keep: dict[str, list[int]] = {d: [] for d in tables}
    for k in np.sort(chosen):
        d, i = rows[k]
        keep[d].append(i)
    return {d: usable(d, tables[d].subset(idx)) for d, idx in keep.items()}
