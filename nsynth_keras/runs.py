"""The run folder: every file name inside it, atomic writes, run names, history and loading a model."""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import keras

from nsynth_keras import features  # noqa: F401  registers the LogMel layer for loading
from nsynth_keras.config import FAMILIES

PACKAGES = ("tensorflow", "keras", "tensorflow-io", "tensorflow-datasets", "keras-tuner", "numpy", "ai-edge-litert")


class RunError(ValueError):
    """A run folder or model file that cannot be used."""


class DivergedError(RunError):
    """Training produced a NaN or infinite loss or weights: the run is worthless, not resumable."""


@dataclass(frozen=True)
class RunFolder:
    """One run folder and the name of every file in it (the only place they are spelled)."""

    path: str

    MODEL = "model.keras"
    CONFIG = "config.json"
    HISTORY = "history.json"
    SAVED_MODEL = "saved_model"
    TFLITE = "model.tflite"  # the fp32 model, written by train and by export
    # python -m nsynth_keras.export: variant -> file. Runs exported before 2026-11-26 also have
    # model_fp32.tflite, the same model under its old name; every reader still accepts it.
    TFLITE_VARIANTS = {
        "fp32": TFLITE,
        "fp16": "model_fp16.tflite",
        "dynamic_int8": "model_dynamic_int8.tflite",
        "int8": "model_int8.tflite",
        "waveform": "model_waveform.tflite",
    }
    LABELS = "labels.txt"
    CURVES = "learning_curves.png"
    LOGS = "logs"
    # Only inside a partial (training) folder:
    HISTORY_CSV = "history.csv"
    BACKUP = "backup"
    BEST_WEIGHTS = "best.weights.h5"
    STARTED = "started.json"  # the settings a partial run was started with (resume checks them)
    PRETRAINED_WEIGHTS = "pretrained.weights.h5"  # after --pretrain-epochs on the extra notes
    TRAINING_ONLY = (HISTORY_CSV, BACKUP, BEST_WEIGHTS, STARTED, PRETRAINED_WEIGHTS)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def model(self) -> str:
        return self.file(self.MODEL)

    @property
    def config(self) -> str:
        return self.file(self.CONFIG)

    @property
    def history(self) -> str:
        return self.file(self.HISTORY)

    @property
    def saved_model(self) -> str:
        return self.file(self.SAVED_MODEL)

    @property
    def tflite(self) -> str:
        return self.file(self.TFLITE)

    @property
    def labels(self) -> str:
        return self.file(self.LABELS)

    @property
    def curves(self) -> str:
        return self.file(self.CURVES)

    @property
    def logs(self) -> str:
        return self.file(self.LOGS)

    @property
    def history_csv(self) -> str:
        return self.file(self.HISTORY_CSV)

    @property
    def backup(self) -> str:
        return self.file(self.BACKUP)

    @property
    def best_weights(self) -> str:
        return self.file(self.BEST_WEIGHTS)

    @property
    def started(self) -> str:
        return self.file(self.STARTED)

    def eval_json(self, split: str, stem: str = "") -> str:
        return self.file(f"eval_{split}{stem}.json")

    def confusion_png(self, split: str, stem: str = "") -> str:
        return self.file(f"confusion_{split}{stem}.png")

    def tflite_check_json(self, split: str) -> str:
        return self.file(f"tflite_check_{split}.json")

    def is_run(self) -> bool:
        """A complete run folder: what train writes (its model and its config)."""
        return os.path.isfile(self.model) and os.path.isfile(self.config)

    def remove_stale_temporaries(self) -> None:
        """Temporary files of writes that a kill interrupted (.<name>.*.tmp): never part of a run."""
        if os.path.isdir(self.path):
            for name in os.listdir(self.path):
                if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.old")):
                    remove(self.file(name))


def check_run_name(name: str) -> str:
    """A run name is one plain path component: never '.', '..', a path, hidden or empty."""
    bad = (not name or name in (".", "..") or name.startswith(".") or "\0" in name
           or os.sep in name or (os.altsep and os.altsep in name) or os.path.basename(name) != name)
    if bad:
        raise RunError(f"--run-name {name!r} is not a plain folder name: use letters, digits, '-', '_' or '.' "
                       "without '/' and not starting with '.'; the run is always written inside --out")
    return name


def check_out_dir(out: str) -> str:
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out {out} is a file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise RunError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"--out {out} is not writable")
    return out


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


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


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_output_file(path: str, what: str = "output") -> bool:
    """An output path names a file the command creates or replaces, never a folder.
    Return True if a file is already there (the caller says it replaces it)."""
    if os.path.isdir(path):
        raise RunError(f"{what} {path} is a folder: name a file to write (nothing was written or removed)")
    return os.path.lexists(path)


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


def write_json(path: str, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: cannot read ({err})") from None


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


def is_saved_model(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb"))


def find_model(run: str) -> str:
    """The model file a command should read: a .keras/.tflite file itself, or a run folder's model.keras."""
    if not os.path.exists(run):
        raise RunError(f"{run}: no such run folder or model file")
    if os.path.isdir(run):
        path = RunFolder(run).model
        if not os.path.isfile(path):
            raise RunError(f"{run}: not a run folder (no {RunFolder.MODEL}); "
                           "train one with python -m nsynth_keras.train")
        return path
    if not run.endswith((".keras", ".tflite")):
        raise RunError(f"{run}: expected a run folder, a .keras or a .tflite file")
    return run


def load_keras(path: str) -> keras.Model:
    """Load a .keras model (safe mode, custom layers registered), with a one-line error if it is broken."""
    if not os.path.isfile(path):
        raise RunError(f"{path}: Keras model not found")
    if not zipfile.is_zipfile(path):
        raise RunError(f"{path}: not a valid .keras file (truncated or corrupt: it is not a complete zip archive)")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # zip, h5 and config errors all mean the same to a user
        raise RunError(f"{path}: cannot load the Keras model ({first_line(err)})") from None


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error message, shortened: what a one-line error shows of a library's exception."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:limit]
