"""File helpers every module shares: atomic writes (outputs are written to a temporary name and renamed),
JSON and CSV history, a pid lock (one writer at a time), a free-space check, one-line errors."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from nsynth_keras.core.config import FAMILIES
from nsynth_keras.core.errors import RunError

# The repository checkout: the page (web/) and the shipped model (saved_models/pretrained) live beside the package.
REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error message, shortened: what a one-line error shows of a library's exception."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:limit]


def map_files(fn: Callable[[str], object], paths: list[str], workers: int = 16, window: int = 1024) -> list:
    """``[fn(p) for p in paths]`` on a pool of threads (file reads release the GIL), ``window`` paths at a time:
    ``pool.map`` over every path at once holds a future per path, about 800 bytes a note (77 MiB for 98,460)."""
    results: list = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), window):
            results.extend(pool.map(fn, paths[start:start + window]))
    return results


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def check_output_file(path: str, what: str = "output") -> bool:
    """An output path names a file the command creates or replaces, never a folder.
    Return True if a file is already there (the caller says it replaces it)."""
    if os.path.isdir(path):
        raise RunError(f"{what} {path} is a folder: name a file to write (nothing was written or removed)")
    return os.path.lexists(path)


def check_output_dir(path: str, flag: str = "--out") -> str:
    """A folder a command writes into: created if missing, refused (naming the flag) before any work when it
    is a file, sits below a file, or cannot be written."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise RunError(f"{flag} {path} is a file, not a folder")
    existing = os.path.abspath(path)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RunError(f"{flag} {path}: {existing} is a file, so no folder can be made below it")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise RunError(f"{flag} {path}: cannot create the folder ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunError(f"{flag} {path} is not writable")
    return path


def remove_stale_temporaries(folder: str) -> None:
    """Temporary files and folders of writes that a kill interrupted (atomic_path's .<name>.*.tmp)."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.old")):
                remove(os.path.join(folder, name))


@contextlib.contextmanager
def atomic_path(path: str, folder: bool = False) -> Iterator[str]:
    """Yield a temporary sibling of ``path`` to write; rename it into place on success.

    A file output (the default) never replaces a folder: an existing folder at ``path`` is refused
    before anything is written. A folder output (``folder=True``) swaps an existing folder out.
    On error the temporary is removed and an existing ``path`` is left as it was.
    """
    path = os.path.normpath(path)
    if not folder:
        check_output_file(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    target = os.path.join(tmp, "out")
    try:
        yield target
        replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace(src: str, dst: str) -> None:
    """Move src to dst; an existing folder at dst is swapped out first and then removed, but only
    by a folder: a file never replaces a folder."""
    if os.path.isdir(dst) and not os.path.islink(dst):
        if not os.path.isdir(src):
            raise RunError(f"{dst} is a folder: refusing to replace it with a file")
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.", suffix=".tmp.old",
                               dir=os.path.dirname(os.path.abspath(dst)))
        os.rename(dst, os.path.join(old, "x"))
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def write_json(path: str, obj, indent: int | None = 2) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, sort_keys=False, allow_nan=False)
        f.write("\n")


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: cannot read ({err})") from None


def set_json_entry(path: str, key: str, value) -> None:
    """Set one entry of a JSON object file (a results file that collects named measurements), keeping the rest."""
    entries = read_json(path) if os.path.isfile(path) else {}
    entries[key] = value
    write_json(path, entries)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_labels(path: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(FAMILIES) + "\n")


def read_history(csv_path: str) -> dict[str, list[float]]:
    """Per-epoch metrics from a CSVLogger-style file, which survives a resume, unlike History.

    A kill between two callbacks can log an epoch that is then run again: the last row wins.
    """
    if not os.path.exists(csv_path):
        return {}
    with open(csv_path, encoding="utf-8") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f) if row.get("epoch")}
    history: dict[str, list[float]] = {}
    for _, row in sorted(rows.items()):
        for key, value in row.items():
            history.setdefault(key, []).append(int(value) if key == "epoch" else float(value))
    return history


def append_history(csv_path: str, row: dict) -> None:
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


MIN_FREE_BYTES = 256 * 2**20  # checkpoints, logs and the exports of one run fit well inside this


def check_free_space(folder: str, needed: int = MIN_FREE_BYTES) -> None:
    """Refuse to start work that writes into folder when its disk is (nearly) full: TF and h5py fail
    late, and sometimes with a crash, when a write hits a full disk."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise RunError(f"{folder}: only {free / 2**20:.0f} MiB free on its disk; at least {needed / 2**20:.0f} MiB "
                       "are needed: free some space and rerun (a killed run resumes)")


@contextlib.contextmanager
def pid_lock(path: str, holder: str) -> Iterator[None]:
    """One process at a time: a lock file holding our pid; one left by a dead process is taken over.
    ``holder`` says in the error what holds it (e.g. "another train of run 'x'")."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise RunError(f"{holder} is running (pid {pid}, lock {path}); wait for it to finish") from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # stale: its process is gone
    else:
        raise RunError(f"cannot take the lock {path}")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
