"""The run folder (every file name inside it), run names, package versions and loading a model."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import zipfile
from dataclasses import dataclass

import keras

from nsynth_keras.core.config import NUM_SAMPLES
from nsynth_keras.core.errors import DivergedError, RunError  # noqa: F401  (re-exported)
from nsynth_keras.core.files import REPO_DIR, atomic_path, first_line, remove_stale_temporaries
from nsynth_keras.data.audio import AUDIO_EXTENSIONS
from nsynth_keras.data.features import DEFAULT_FRONTEND, Frontend  # also registers the LogMel layer for loading

# The one run folder kept in git: the shipped model (MODEL_CARD.md says what it is), used when no RUN is given.
PRETRAINED = os.path.join(REPO_DIR, "saved_models", "pretrained")

PACKAGES = ("tensorflow", "keras", "tensorflow-io", "tensorflow-datasets", "keras-tuner", "numpy", "ai-edge-litert")


@dataclass(frozen=True)
class RunFolder:
    """One run folder and the name of every file in it (the only place they are spelled)."""

    path: str

    MODEL = "model.keras"
    CONFIG = "config.json"
    HISTORY = "history.json"
    SAVED_MODEL = "saved_model"
    TFLITE = "model.tflite"  # the fp32 model, written by train and by export
    # Runs exported before 2026-11-26 also have model_fp32.tflite, the same model under its old name;
    # every reader still accepts it.
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

    @staticmethod
    def tflite_file(variant: str) -> str:
        """The file of an export format (tflite.EXPORT_FORMATS): model.tflite for fp32, else model_<name>.tflite."""
        return RunFolder.TFLITE if variant == "fp32" else f"model_{variant}.tflite"

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
        remove_stale_temporaries(self.path)


def check_run_name(name: str) -> str:
    """A run name is one plain path component: never '.', '..', a path, hidden or empty."""
    bad = (not name or name in (".", "..") or name.startswith(".") or "\0" in name
           or os.sep in name or (os.altsep and os.altsep in name) or os.path.basename(name) != name)
    if bad:
        raise RunError(f"--run-name {name!r} is not a plain folder name: use letters, digits, '-', '_' or '.' "
                       "without '/' and not starting with '.'; the run is always written inside --out")
    return name


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


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


def save_weights(model: keras.Model, path: str) -> None:
    """model.save_weights(path) through a temporary name: a kill leaves the old file or the new one, never a
    half-written .h5 that a resumed run could not open."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp + ".weights.h5")  # Keras wants the suffix
        os.replace(tmp + ".weights.h5", tmp)


def takes_waveform(model: keras.Model) -> bool:
    """A model whose input is 16 kHz audio [batch, 64000] (its frontend inside), not features."""
    return tuple(model.input_shape[1:]) == (NUM_SAMPLES,)


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


def run_or_pretrained(run: str | None, log=None) -> str:
    """The model a command reads: the RUN given, or the shipped pretrained model (saying so in one line)."""
    if run is not None:
        return run
    if not os.path.isfile(RunFolder(PRETRAINED).model):
        raise RunError(f"no RUN given and the shipped pretrained model is missing ({PRETRAINED}); train one with "
                       "python -m nsynth_keras.train, or rebuild it as its MODEL_CARD.md says")
    if log:
        log(f"No RUN given: using the pretrained model {os.path.relpath(PRETRAINED)} (see its MODEL_CARD.md)")
    return PRETRAINED


def looks_like_model(path: str) -> bool:
    """A path that names a model rather than audio: a run folder, a SavedModel, a .keras or .tflite file (or a
    missing path without an audio file's ending, so that a mistyped run gets "no such run folder")."""
    return (path.endswith((".keras", ".tflite")) or is_saved_model(path)
            or (os.path.isdir(path) and os.path.isfile(RunFolder(path).model))
            or (not os.path.lexists(path) and not path.lower().endswith(AUDIO_EXTENSIONS)))


def run_frontend(model: str) -> tuple[Frontend, str]:
    """The frontend a model was trained with, from the config.json of its run folder (the folder itself, or the
    folder of a model file), and where that came from; the default for a model without a record (an old run, a
    bare .keras file). A record this code cannot compute is refused by name."""
    folder = model if os.path.isdir(model) else os.path.dirname(os.path.abspath(model))
    path = RunFolder(folder).config
    if not os.path.isfile(path):
        return DEFAULT_FRONTEND, "the default frontend (no config.json beside the model)"
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f).get("frontend")
    except (OSError, ValueError, AttributeError) as err:
        raise RunError(f"{path}: cannot read the run's frontend ({err})") from None
    if record is None:
        return DEFAULT_FRONTEND, f"the default frontend ({path} records none: a run from before they were recorded)"
    try:
        return Frontend.from_json(record, f"{path}: frontend"), f"the frontend recorded in {path}"
    except (TypeError, ValueError) as err:
        raise RunError(f"cannot feed this model: {err}") from None
