"""The run folder: atomic writes, config/history files and loading a trained model."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator

from nsynth_keras.config import FAMILIES

PACKAGES = ("tensorflow", "keras", "tensorflow-io", "tensorflow-datasets", "keras-tuner", "numpy", "ai-edge-litert")


class RunError(ValueError):
    """A run folder or model file that cannot be used."""


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary sibling of ``path`` to write (a file or a folder); rename it into place on success.

    On error the temporary is removed and an existing ``path`` is left as it was.
    """
    path = os.path.normpath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    target = os.path.join(tmp, "out")
    try:
        yield target
        if os.path.isdir(path) and not os.path.islink(path):
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def write_labels(path: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(FAMILIES) + "\n")


def find_model(run: str) -> str:
    """The model file a command should read: a .keras/.tflite file itself, or a run folder's model.keras."""
    if not os.path.exists(run):
        raise RunError(f"{run}: no such run folder or model file")
    if os.path.isdir(run):
        path = os.path.join(run, "model.keras")
        if not os.path.isfile(path):
            raise RunError(f"{run}: not a run folder (no model.keras); train one with python -m nsynth_keras.train")
        return path
    if not run.endswith((".keras", ".tflite")):
        raise RunError(f"{run}: expected a run folder, a .keras or a .tflite file")
    return run


def load_keras(path: str):
    """Load a .keras model (custom layers registered), with a one-line error if it is broken."""
    import keras

    import nsynth_keras.features  # noqa: F401  registers LogMel

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # zip, h5 and config errors all mean the same to a user
        raise RunError(f"{path}: cannot load the Keras model ({str(err).splitlines()[0][:200]})") from None
