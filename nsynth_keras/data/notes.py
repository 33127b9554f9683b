"""The note table: which NSynth notes a json/wav folder holds, read and checked without decoding audio
(no TensorFlow), and the filters that choose among them.

``read_examples(data_dir, split)`` parses ``nsynth-<split>/examples.json``, checks each listed wav's header
and returns a NoteTable (paths, labels, the notes skipped and why).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from nsynth_keras.core.config import FAMILIES, SOURCES, SPLITS
from nsynth_keras.core.errors import DataError
from nsynth_keras.core.files import map_files
from nsynth_keras.core.settings import setting
from nsynth_keras.data.audio import AudioError, probe_wav, read_wav

log = logging.getLogger(__name__)

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
    data_dir: str, split: str, filters: Filters | None = None, *, strict: bool = False, seed: int = 0,
    check: bool = True,
) -> NoteTable:
    """Read ``nsynth-<split>/examples.json`` and check every listed wav's header (``check=False``: leave that to
    ``checked``, for a caller that samples the notes first).

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
            examples = json.load(f, object_hook=_parsed_early)
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
        if filters.keeps(row.source, row.pitch):
            candidates.append((key, row))
    del examples  # before the paths are made, so that they are not scattered among its freed objects
    if filters.max_examples is not None and filters.max_examples < len(candidates):
        # A seeded sample (kept in file order) so a smoke run still sees every family.
        keep = np.sort(np.random.default_rng(seed).choice(len(candidates), filters.max_examples, replace=False))
        candidates = [candidates[i] for i in keep]

    for key, row in candidates:
        table.path.append(layout.wav(split, key))
        # One string per instrument, not per note: a bank of 20,000 notes has a few hundred instruments
        row = row._replace(instrument=sys.intern(row.instrument))
        for name in ("note", "instrument", "family", "source", "pitch", "velocity"):
            getattr(table, name).append(getattr(row, name))
        table.standard.append(None)  # not probed yet
    if check:
        table = checked(table, strict)
    if not len(table):
        raise DataError(f"no usable notes in {json_path} with the filters given")
    return table


def checked(table: NoteTable, strict: bool = False) -> NoteTable:
    """The notes whose wav is usable (its header, and for a non-standard file its samples); the others skipped
    by name, or with ``strict`` an error."""
    infos = map_files(_check_wav, table.path)
    keep = []
    for i, info in enumerate(infos):
        if isinstance(info, AudioError):
            _skip(table, str(info), strict)
            continue
        table.standard[i] = info
        keep.append(i)
    return table.subset(keep)


NOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def instrument_of(note: str) -> str:
    """The instrument a note name names: 'keyboard_electronic_003' for keyboard_electronic_003-060-050."""
    return note.rsplit("-", 2)[0]


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


class _Fields(NamedTuple):
    """A note's labels as read from examples.json (note and instrument None where the entry leaves them out)."""

    note: str | None
    instrument: str | None
    family: int
    source: int
    pitch: int
    velocity: int


def _fields(meta: dict) -> _Fields:
    note, instrument = meta.get("note_str"), meta.get("instrument_str")
    return _Fields(None if note is None else str(note), None if instrument is None else str(instrument),
                   _label(meta, "instrument_family", FAMILIES), _label(meta, "instrument_source", SOURCES),
                   _midi(meta, "pitch"), _midi(meta, "velocity", 0))


def _parsed_early(obj: dict) -> dict | _Fields:
    """json's object_hook: each note's metadata becomes its few fields as soon as it is read, so the parser's
    dicts are freed one at a time instead of all at the end (100,000 notes: read_examples left 1,690 bytes a
    note in the process, the freed dicts' memory pinned by the strings among them; now 675: bench/pipeline.py).
    Anything else, a bad entry included, stays as read, for _parse_entry to check and name."""
    try:
        return _fields(obj)
    except (KeyError, TypeError, ValueError):
        return obj


def _parse_entry(key: str, meta: dict | _Fields) -> _Fields:
    # The key names the wav file: a plain name, never a path out of the audio folder.
    if not isinstance(key, str) or not NOTE_NAME.match(key) or ".." in key:
        raise ValueError("the note name is not a plain file name (letters, digits, '_', '-', '.'; no '/' or '..')")
    if not isinstance(meta, _Fields):
        if not isinstance(meta, dict):
            raise TypeError("metadata is not an object")
        meta = _fields(meta)
    return meta._replace(note=key if meta.note is None else meta.note,
                         instrument=instrument_of(key) if meta.instrument is None else meta.instrument)


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
