"""Leakage: extra notes (rendered training notes, selection notes) checked against the valid and test splits
by note name, instrument name and audio bytes, before any of them is used."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from typing import TYPE_CHECKING

from nsynth_keras.core.errors import DataError
from nsynth_keras.core.files import map_files
from nsynth_keras.data.notes import JsonWavLayout, NoteTable, read_examples

if TYPE_CHECKING:
    from nsynth_keras.data.datasets import DataSpec

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- leakage


def file_digest(path: str) -> str:
    """A file's content hash."""
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def held_out_digest(path: str) -> str:
    """A valid or test note's file_digest, computed once per process for a file left unchanged (by size and
    mtime): a run checks every folder it reads besides the data dir against them. Extra notes are hashed once a
    run, uncached: a cache of them grew the run's memory with their count."""
    st = os.stat(path)
    return _held_out_digest(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32_768)  # every valid and test note of full NSynth (16,774), twice over
def _held_out_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


def held_out_keys(spec: DataSpec) -> tuple[set[str], set[str], dict[str, str]]:
    """Note names, instrument names and audio digests of the valid and test splits (every listed note)."""
    notes, instruments, digests = set(), set(), {}
    for split in ("valid", "test"):
        if not JsonWavLayout(spec.data_dir).has(split):
            continue
        table = read_examples(spec.data_dir, split)
        notes.update(table.note)
        instruments.update(table.instrument)
        hashes = map_files(held_out_digest, table.path, workers=8)
        digests.update(zip(hashes, (f"{split} note {n}" for n in table.note)))
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
        own = map_files(file_digest, table.path, workers=8)
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
