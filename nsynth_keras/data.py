"""NSynth sources -> a tf.data.Dataset of notes.

Every source yields the same element, a dict of
``audio`` float32 [64000], ``family`` int32, ``source`` int32, ``pitch`` int32,
``velocity`` int32, ``note`` string and ``instrument`` string.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from nsynth_keras.audio import AudioError, probe_wav, read_wav
from nsynth_keras.config import DEFAULT_DATA_DIR, FAMILIES, NUM_SAMPLES, SOURCES, SPLITS
from nsynth_keras.errors import DataError
from nsynth_keras.settings import from_dict, setting

log = logging.getLogger(__name__)

TFDS_CONFIGS = ("full", "gansynth_subset", "gansynth_subset.f0_and_loudness")
SHUFFLE_BUFFER = 10_000
# --source NAME -> NoteSource (filled at the end of this module). Adding a source: a function
# (spec, split, shuffle, seed, shard, part) -> SplitData and an entry in NOTE_SOURCES.
NOTE_SOURCES: dict[str, NoteSource] = {}


DATA, EXTRA = "data", "extra training data (train split only; never valid or test)"  # flag groups in --help


@dataclass
class Filters:
    """Which notes to keep; None keeps all."""

    sources: tuple[str, ...] | None = setting(None, "keep only notes of these instrument sources",
                                              choices=SOURCES, flag="--instrument-source", group=DATA)
    pitch_min: int | None = setting(None, "lowest MIDI pitch kept", group=DATA)
    pitch_max: int | None = setting(None, "highest MIDI pitch kept", group=DATA)
    max_examples: int | None = setting(None, "use at most N notes per split (a seeded sample; for smoke runs)",
                                       metavar="N", group=DATA, at_least=1)

    def keeps(self, source: int, pitch: int) -> bool:
        if self.sources is not None and SOURCES[source] not in self.sources:
            return False
        if self.pitch_min is not None and pitch < self.pitch_min:
            return False
        if self.pitch_max is not None and pitch > self.pitch_max:
            return False
        return True


@dataclass
class NoteTable:
    """The notes of one json/wav split that passed the checks, column by column."""

    split: str
    path: list[str] = field(default_factory=list)
    note: list[str] = field(default_factory=list)
    instrument: list[str] = field(default_factory=list)
    family: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    pitch: list[int] = field(default_factory=list)
    velocity: list[int] = field(default_factory=list)
    standard: list[bool] = field(default_factory=list)  # decodable by tf.audio.decode_wav as is
    skipped: list[str] = field(default_factory=list)  # "path: problem" for each bad note

    def __len__(self) -> int:
        return len(self.path)

    COLUMNS = ("path", "note", "instrument", "family", "source", "pitch", "velocity", "standard")

    def subset(self, indices) -> NoteTable:
        part = NoteTable(self.split, skipped=self.skipped)
        for name in self.COLUMNS:
            column = getattr(self, name)
            setattr(part, name, [column[i] for i in indices])
        return part

    @classmethod
    def concat(cls, tables: list[NoteTable]) -> NoteTable:
        whole = cls(tables[0].split)
        for t in tables:
            for name in (*cls.COLUMNS, "skipped"):
                getattr(whole, name).extend(getattr(t, name))
        return whole

    def shard(self, num_shards: int, index: int) -> NoteTable:
        """Every num_shards-th note from index, after dropping the len % num_shards last notes,
        so that every worker gets the same number of notes (and of steps per epoch)."""
        usable = len(self) - len(self) % num_shards
        return self.subset(range(index, usable, num_shards))


# --------------------------------------------------------------------------- json/wav


@dataclass(frozen=True)
class JsonWavLayout:
    """The official NSynth json/wav release layout, the one place its names are spelled:
    ``<root>/nsynth-<split>/examples.json`` and ``<root>/nsynth-<split>/audio/<note_str>.wav``."""

    root: str

    EXAMPLES = "examples.json"
    AUDIO = "audio"

    def split_dir(self, split: str) -> str:
        return os.path.join(self.root, f"nsynth-{split}")

    def examples(self, split: str) -> str:
        return os.path.join(self.split_dir(split), self.EXAMPLES)

    def audio_dir(self, split: str) -> str:
        return os.path.join(self.split_dir(split), self.AUDIO)

    def wav(self, split: str, note: str) -> str:
        return os.path.join(self.audio_dir(split), f"{note}.wav")

    def has(self, split: str) -> bool:
        return os.path.isfile(self.examples(split))


def read_examples(
    data_dir: str, split: str, filters: Filters | None = None, *, strict: bool = False, seed: int = 0
) -> NoteTable:
    """Read ``nsynth-<split>/examples.json`` and check every listed wav's header.

    A bad entry or wav is skipped with a warning and listed in ``NoteTable.skipped``;
    with ``strict`` it raises instead. Labels are never changed.
    """
    filters = filters or Filters()
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not os.path.isdir(data_dir):
        raise DataError(
            f"data directory {data_dir} does not exist; pass --data-dir pointing at the folder that "
            "holds nsynth-train/, nsynth-valid/ and nsynth-test/ (the NSynth json/wav release)"
        )
    layout = JsonWavLayout(data_dir)
    json_path = layout.examples(split)
    if not os.path.isfile(json_path):
        raise DataError(f"{json_path} not found: {data_dir} has no json/wav '{split}' split")
    try:
        with open(json_path, encoding="utf-8") as f:
            examples = json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(f"{json_path}: not valid JSON ({err})") from None
    if not isinstance(examples, dict):
        raise DataError(f"{json_path}: expected an object of note_str -> metadata")

    table = NoteTable(split)
    candidates = []
    for key, meta in examples.items():
        try:
            row = _parse_entry(key, meta)
        except KeyError as err:
            _skip(table, f"{json_path}: entry {key!r}: missing field {err}", strict)
            continue
        except (TypeError, ValueError) as err:
            _skip(table, f"{json_path}: entry {key!r}: {err}", strict)
            continue
        if filters.keeps(row["source"], row["pitch"]):
            row["path"] = layout.wav(split, key)
            candidates.append(row)
    if filters.max_examples is not None and filters.max_examples < len(candidates):
        # A seeded sample (kept in file order) so a smoke run still sees every family.
        keep = np.sort(np.random.default_rng(seed).choice(len(candidates), filters.max_examples, replace=False))
        candidates = [candidates[i] for i in keep]

    with ThreadPoolExecutor(max_workers=16) as pool:
        infos = list(pool.map(_check_wav, [row["path"] for row in candidates]))
    for row, info in zip(candidates, infos):
        if isinstance(info, AudioError):
            _skip(table, str(info), strict)
            continue
        for name in ("path", "note", "instrument", "family", "source", "pitch", "velocity"):
            getattr(table, name).append(row[name])
        table.standard.append(info)
    if not len(table):
        raise DataError(f"no usable notes in {json_path} with the filters given")
    return table


NOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _label(meta: dict, field: str, names: tuple[str, ...]) -> int:
    """An integer label in range that agrees with its ``<field>_str`` when both are given."""
    value = meta[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} {value!r} is not an integer")
    if not 0 <= value < len(names):
        raise ValueError(f"{field} {value} is not 0..{len(names) - 1}")
    name = meta.get(f"{field}_str")
    if name is not None and name != names[value]:
        raise ValueError(f"{field} {value} ({names[value]}) contradicts {field}_str {name!r}")
    return value


def _integer(meta: dict, field: str, default: int | None = None) -> int:
    value = meta.get(field, default) if default is not None else meta[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} {value!r} is not an integer")
    return value


def _midi(meta: dict, field: str, default: int | None = None) -> int:
    value = _integer(meta, field, default)
    if not 0 <= value <= 127:
        raise ValueError(f"{field} {value} is not a MIDI value 0..127")
    return value


def _parse_entry(key: str, meta: dict) -> dict:
    # The key names the wav file: a plain name, never a path out of the audio folder.
    if not isinstance(key, str) or not NOTE_NAME.match(key) or ".." in key:
        raise ValueError("the note name is not a plain file name (letters, digits, '_', '-', '.'; no '/' or '..')")
    if not isinstance(meta, dict):
        raise TypeError("metadata is not an object")
    return {
        "note": str(meta.get("note_str", key)),
        "instrument": str(meta.get("instrument_str", key.rsplit("-", 2)[0])),
        "family": _label(meta, "instrument_family", FAMILIES),
        "source": _label(meta, "instrument_source", SOURCES),
        "pitch": _midi(meta, "pitch"),
        "velocity": _midi(meta, "velocity", 0),
    }


def _check_wav(path: str) -> bool | AudioError:
    """True: TF decodes it as is; False: needs the slow path; or the error."""
    try:
        info = probe_wav(path)
        if not info.standard:
            read_wav(path)  # non-standard files are rare: check the samples too (NaN, inf)
        return info.standard
    except AudioError as err:
        return err


def _skip(table: NoteTable, message: str, strict: bool) -> None:
    if strict:
        raise DataError(message + " (--strict: stopping; drop --strict to skip bad notes)")
    log.warning("skipping %s", message)
    table.skipped.append(message)


def table_dataset(table: NoteTable, *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Stream the notes of a NoteTable, decoding wavs inside the pipeline."""
    ds = tf.data.Dataset.from_tensor_slices(
        {
            "path": table.path,
            "standard": table.standard,
            "note": table.note,
            "instrument": table.instrument,
            "family": np.asarray(table.family, np.int32),
            "source": np.asarray(table.source, np.int32),
            "pitch": np.asarray(table.pitch, np.int32),
            "velocity": np.asarray(table.velocity, np.int32),
        }
    )
    if shuffle:
        # NSynth is stored ordered by instrument, so a shuffle buffer after decoding
        # would leave whole batches of one family: shuffle the (cheap) file list instead,
        # over all of it, with a new order each epoch.
        ds = ds.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)
    return ds.map(_decode_row, num_parallel_calls=tf.data.AUTOTUNE)


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

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "data_dir": os.path.abspath(self.data_dir) if self.data_dir else None,
            "tfds_config": self.tfds_config,
            "instrument_sources": list(self.filters.sources) if self.filters.sources else None,
            "pitch_min": self.filters.pitch_min,
            "pitch_max": self.filters.pitch_max,
            "max_examples": self.filters.max_examples,
            "strict": self.strict,
            "extra_train": [os.path.abspath(d) for d in self.extra_train],
            "extra_ratio": self.extra_ratio,
            "extra_balance": self.extra_balance,
            "drop_overlap": self.drop_overlap,
            "select_extra": [os.path.abspath(d) for d in self.select_extra],
        }

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

    dataset: tf.data.Dataset
    num_examples: int | None  # None where the source cannot tell cheaply (TFDS with filters)
    skipped: list[str]
    families: list[int] | None = None  # every note's family, where known without decoding
    parts: dict[str, int] = field(default_factory=dict)  # notes from each folder (train: the data dir + extras)
    overlap_dropped: list[str] = field(default_factory=list)  # extra notes dropped as overlapping valid/test


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
    return SplitData(table_dataset(table, shuffle=shuffle, seed=seed), len(table), table.skipped, table.family,
                     {os.path.abspath(d): len(t) for d, t in parts.items()}, dropped)


def tfds_split(spec: DataSpec, split: str, *, shuffle: bool, seed: int, shard: tuple[int, int] | None,
               part: str) -> SplitData:
    """A split of a prepared TFDS nsynth (no extra folders: they are json/wav)."""
    if spec.extra_train or spec.select_extra:
        raise DataError("--extra-train and --select-extra folders are json/wav; they mix with --source jsonwav only")
    ds = tfds_dataset(
        split, config=spec.tfds_config, data_dir=spec.data_dir, filters=spec.filters, shuffle=shuffle, seed=seed
    )
    n = int(ds.cardinality()) if ds.cardinality() >= 0 else None
    return SplitData(ds, n, [])


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
    evenly over families), seeded."""
    tables = {d: read_examples(d, "train", spec.filters, strict=spec.strict, seed=seed) for d in extra_folders(spec)}
    if spec.extra_ratio is None and not spec.extra_balance:
        return tables
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
    return {d: tables[d].subset(idx) for d, idx in keep.items()}


# --------------------------------------------------------------------------- leakage


def file_digest(path: str) -> str:
    """A file's content hash, computed once per process for a file left unchanged (by size and mtime)."""
    st = os.stat(path)
    return _digest(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1_000_000)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def held_out_keys(spec: DataSpec) -> tuple[set[str], set[str], dict[str, str]]:
    """Note names, instrument names and audio digests of the valid and test splits (every listed note)."""
    notes, instruments, digests = set(), set(), {}
    for split in ("valid", "test"):
        if not JsonWavLayout(spec.data_dir).has(split):
            continue
        table = read_examples(spec.data_dir, split)
        notes.update(table.note)
        instruments.update(table.instrument)
        with ThreadPoolExecutor(max_workers=8) as pool:
            digests.update(zip(pool.map(file_digest, table.path), (f"{split} note {n}" for n in table.note)))
    return notes, instruments, digests


def without_overlap(spec: DataSpec, tables: dict[str, NoteTable],
                    what: str = "extra training notes") -> tuple[dict[str, NoteTable], list[str]]:
    """Check extra notes (for training, or for choosing the best epoch) against valid and test by note name,
    instrument name and audio bytes: every folder a run reads besides the data dir passes this one check.

    Any overlap is refused (it would score the model on notes it trained on), or with
    ``spec.drop_overlap`` those notes are dropped and listed."""
    notes, instruments, digests = held_out_keys(spec)
    dropped: list[str] = []
    kept: dict[str, NoteTable] = {}
    for folder, table in tables.items():
        with ThreadPoolExecutor(max_workers=8) as pool:
            own = list(pool.map(file_digest, table.path))
        keep = []
        for i, (note, instrument, digest) in enumerate(zip(table.note, table.instrument, own)):
            why = ("its note name is in valid/test" if note in notes
                   else f"its instrument {instrument} is in valid/test" if instrument in instruments
                   else f"its audio is identical to {digests[digest]}" if digest in digests else None)
            if why is None:
                keep.append(i)
            else:
                dropped.append(f"{table.path[i]}: {why}")
        kept[folder] = table.subset(keep)
    if dropped and not spec.drop_overlap:
        shown = "; ".join(dropped[:3]) + (f"; and {len(dropped) - 3} more" if len(dropped) > 3 else "")
        use = "training on them" if what == "extra training notes" else "choosing the best epoch on them"
        raise DataError(f"{len(dropped)} {what} overlap the valid/test splits of {spec.data_dir} "
                        f"({shown}): {use} would inflate every score. Remove them, or pass "
                        "--drop-overlap to leave them out (counted in config.json)")
    if dropped:
        log.warning("dropped %d %s that overlap valid/test", len(dropped), what)
    empty = [f for f, t in kept.items() if not len(t)]
    if empty:
        raise DataError(f"no {what} left in {', '.join(empty)} after dropping the ones that overlap "
                        "valid/test")
    return kept, dropped
