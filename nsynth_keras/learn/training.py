"""Training: TrainConfig, and train(config, spec) in four steps that read top to bottom:
prepare the run folder, build the data, fit, finish (score, write, rename).

What the train command, tune --export-best, the benchmarks, the tests and the notebook share.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime

import keras
import numpy as np
import tensorflow as tf

from nsynth_keras.core.config import DEFAULT_RUNS_DIR, FAMILIES, NUM_CLASSES
from nsynth_keras.core.errors import DataError, SettingsError
from nsynth_keras.core.files import (
    check_free_space,
    check_output_dir,
    pid_lock,
    read_history,
    read_json,
    remove,
    replace,
    write_json,
    write_labels,
)
from nsynth_keras.core.settings import check_fields, setting
from nsynth_keras.data.datasets import NOTE_SOURCES, DataSpec
from nsynth_keras.data.features import (
    AUGMENTATIONS,
    DB_AUGMENTATIONS,
    NORMALISATIONS,
    ONSET_DELAY_SHARE,
    Frontend,
    make_augment,
    make_wave_augment,
)
from nsynth_keras.data.pipeline import split_feature_batches, split_features
from nsynth_keras.data.twins import novel_notes
from nsynth_keras.deploy import tflite
from nsynth_keras.learn import distributed
from nsynth_keras.learn.objective import STEPS_PER_EXECUTION, compile_model  # noqa: F401  (re-exported)
from nsynth_keras.models.cnn import HOMEWORK, MODELS, check_model_settings
from nsynth_keras.models.runs import (
    DivergedError,
    RunError,
    RunFolder,
    check_run_name,
    package_versions,
    save_weights,
)
from nsynth_keras.reports import plots

PRECISIONS = {"off": "float32", "on": "mixed_float16", "bf16": "mixed_bfloat16"}
# Settings that may change when a killed run is resumed; every other setting must match.
RESUMABLE_CHANGES = ("epochs", "early_stopping", "overwrite", "out", "run_name", "cache_dir", "tflite", "origin",
                     "steps_per_execution")
MODEL, TRAINING, OUTPUT = "model", "training", "output"  # flag groups in --help


@dataclass
class TrainConfig:
    """Every training setting, declared once: each field's default, help and choices also make the
    train command's flag (``settings.add_flags``); config.json records them all."""

    model: str = setting("baseline", "baseline: the homework CNN; cnn: configured by the flags below",
                         choices=tuple(MODELS), group=MODEL)
    filters: tuple[int, ...] = setting(HOMEWORK["filters"], "kernels per conv block (cnn)", group=MODEL,
                                       at_least=1)
    kernel_size: int = setting(HOMEWORK["kernel_size"], "conv kernel size (cnn)", group=MODEL, at_least=1)
    padding: str = setting(HOMEWORK["padding"], "conv padding (cnn)", choices=("same", "valid"), group=MODEL)
    strides: int = setting(HOMEWORK["strides"], "conv strides (cnn)", choices=(1, 2), group=MODEL)
    dropout: float = setting(0.0, "Dropout rate after each block (cnn)", group=MODEL, at_least=0, below=1)
    dense_units: int = setting(0, "hidden Dense width before the classifier, 0: none (cnn)", group=MODEL, at_least=0)
    batch_norm: bool = setting(False, "batch normalisation after each conv (cnn)", group=MODEL)
    global_pool: bool = setting(False, "global average pooling instead of Flatten (cnn)", group=MODEL)
    weight_decay: float = setting(0.0, "L2 weight decay (cnn)", group=MODEL, at_least=0)
    epochs: int = setting(20, "epochs", group=TRAINING, at_least=1)
    pretrain_epochs: int = setting(0, "first train N epochs on the --extra-train notes alone, then fine-tune "
                                      "--epochs on the real ones (0: mix them instead)", metavar="N",
                                   group=TRAINING, at_least=0)
    finetune_extra: float = setting(0.0, "with --pretrain-epochs: keep R extra notes per real note in the "
                                         "fine-tuning batches, so families only the extra notes have (synth_lead) "
                                         "are not forgotten", metavar="R", group=TRAINING, at_least=0)
    finetune_learning_rate: float | None = setting(None, "with --pretrain-epochs: a fresh Adam at this learning "
                                                         "rate for fine-tuning on the real notes, so they adjust "
                                                         "rather than overwrite what the extra notes taught (none: "
                                                         "--learning-rate, the pretraining optimizer carried on)",
                                                   metavar="LR", group=TRAINING, above=0)
    batch_size: int = setting(32, "batch size (per replica with --strategy)", group=TRAINING, at_least=1,
                              below=2**31)
    learning_rate: float = setting(1e-3, "Adam learning rate", group=TRAINING, above=0)
    lr_schedule: str = setting("constant", "learning-rate schedule over the epochs", choices=("constant", "cosine"),
                               group=TRAINING)
    frontend: str = setting("log", "features of each note: log, the homework log-mel; pcen, per-channel energy "
                                   "normalisation of the same mels (recorded in the run: evaluate, predict and the "
                                   "exports compute the same)", choices=tuple(NORMALISATIONS), group=TRAINING)
    augment: tuple[str, ...] = setting((), "training-only augmentations", choices=AUGMENTATIONS, metavar="AUG",
                                       group=TRAINING)
    recording_chain: float = setting(0.0, "probability that a training note passes through a random recording "
                                          "chain (EQ, filters, room reverb, noise at 30-50 dB SNR) before the "
                                          "frontend, drawn anew each epoch; training log-mels are then recomputed "
                                          "every epoch instead of cached (0: off)", metavar="P", group=TRAINING,
                                     at_least=0, at_most=1)
    onset_delay: float = setting(0.0, "longest silence put before a training note (each with probability "
                                      f"{ONSET_DELAY_SHARE:g}), drawn anew each epoch "
                                      "(seconds, before the frontend: a recording seldom starts exactly at the "
                                      "note's onset, as every NSynth note does); training features are then "
                                      "recomputed every epoch (0: off)", metavar="S", group=TRAINING, at_least=0,
                                 at_most=2)
    label_smoothing: float = setting(0.0, "label smoothing for the cross-entropy", group=TRAINING, at_least=0,
                                     below=1)
    # A killed run resumes from the average (what each epoch's backup holds), not from the last step's weights.
    ema: float = setting(0.0, "keep a moving average of the weights with this momentum (e.g. 0.99: about the last "
                              "100 steps) and validate, choose and keep it instead of the last step's weights "
                              "(0: off)", metavar="MOMENTUM", group=TRAINING, at_least=0, below=1)
    class_weight: bool = setting(False, "weight the loss by inverse family frequency (balanced)", group=TRAINING)
    select_on: str = setting("all", "valid notes whose accuracy chooses the best epoch and stops early: all, or "
                                    "novel (those without a twin among the real training notes, by the twin audit: "
                                    "what a new instrument would score)", choices=("all", "novel"), group=TRAINING)
    early_stopping: int = setting(0, "stop after PATIENCE epochs without a better val_accuracy (0: off)",
                                  metavar="PATIENCE", group=TRAINING, at_least=0)
    seed: int = setting(0, "seed for weights and shuffling", group=TRAINING, at_least=0, below=2**32)
    steps_per_execution: int = setting(STEPS_PER_EXECUTION, "training steps per call into TensorFlow (Keras "
                                       "steps_per_execution): less per-step overhead; the progress bar and the NaN "
                                       "check see every N-th batch (1: every batch)", metavar="N", group=TRAINING,
                                       at_least=1, below=2**31)
    deterministic: bool = setting(False, "enable TF op determinism: identical metrics for identical runs "
                                         "(slower); --augment draws from stateful RNGs and is not bit-reproducible",
                                  group=TRAINING)
    mixed_precision: str = setting("auto", "auto: mixed_float16 when a GPU is visible, mixed_bfloat16 on a CPU "
                                           "with native bf16 (avx512_bf16/amx_bf16), else float32; on: "
                                           "mixed_float16; bf16: mixed_bfloat16; off: float32. Exports are always "
                                           "float32", choices=("auto", *PRECISIONS), group=TRAINING)
    strategy: str = setting("default", "default: one device; mirrored: all GPUs of this machine; multiworker: "
                                       "several machines (TF_CONFIG)", choices=("default", "mirrored", "multiworker"),
                            group=TRAINING)
    out: str = setting(DEFAULT_RUNS_DIR, "folder for run folders", group=OUTPUT)
    run_name: str | None = setting(None, "run folder name, one plain name inside --out (none: "
                                         "<model>-<timestamp>); reuse a killed run's name to resume it",
                                   group=OUTPUT)
    overwrite: bool = setting(False, "replace an existing run folder of that name (only once the new run is "
                                     "complete) and discard a killed run's partial folder", group=OUTPUT)
    cache_dir: str | None = setting(None, "cache log-mels in files here (keyed by frontend, data settings and "
                                          "seed; none: in memory)", group=OUTPUT)
    tflite: bool = setting(True, "skip the model.tflite export", group=OUTPUT)
    origin: dict | None = None  # where the settings came from (e.g. a tuning project), recorded in config.json

    def __post_init__(self):
        self.filters = tuple(int(f) for f in self.filters)
        self.augment = tuple(self.augment)

    def validate(self) -> None:
        """Each field against its declaration (type, bounds, choices: settings.check_fields), then the rules
        between fields."""
        check_fields(self)
        checks = [
            (not self.finetune_extra or self.pretrain_epochs, "--finetune-extra goes with --pretrain-epochs"),
            (self.finetune_learning_rate is None or self.pretrain_epochs,
             "--finetune-learning-rate goes with --pretrain-epochs"),
            (not (self.pretrain_epochs and self.strategy == "multiworker"),
             "--pretrain-epochs does not run with --strategy multiworker"),
            (not (self.ema and self.strategy == "multiworker"), "--ema does not run with --strategy multiworker"),
            (bool(self.filters), "--filters: give at least one kernel count"),
            (self.frontend == "log" or not set(self.augment) & set(DB_AUGMENTATIONS),
             f"--augment {' and '.join(DB_AUGMENTATIONS)} change decibels, and --frontend {self.frontend} features "
             "are not in decibels: leave them out"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        if self.run_name is not None:
            check_run_name(self.run_name)
        # A configuration that shrinks to nothing fails here, before any data is read or any TF op runs.
        try:
            check_model_settings(self.model, dataclasses.asdict(self))
        except ValueError as err:
            raise SettingsError(f"--model {self.model}: {err}") from None

    def build_model(self) -> keras.Model:
        """This run's network, built and uncompiled (models.cnn.MODELS)."""
        return MODELS[self.model](dataclasses.asdict(self))

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


# --------------------------------------------------------------------------- building blocks


def cpu_flags() -> set[str]:
    """The CPU feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(choice: str, flags: set[str] | None = None, gpus: int | None = None) -> tuple[str, str]:
    """(Keras policy, why). auto: mixed_float16 on a GPU; mixed_bfloat16 on a CPU with native bf16
    (AVX512-BF16 or AMX: measured 1.3-2.4x float32 here); float32 otherwise (bf16 without native
    support was measured 8x slower than float32, and float16 on a CPU 50x slower)."""
    if choice != "auto":
        return PRECISIONS[choice], f"--mixed-precision {choice}"
    gpus = len(tf.config.list_physical_devices("GPU")) if gpus is None else gpus
    if gpus:
        return "mixed_float16", f"auto: {gpus} GPU(s) visible"
    flags = cpu_flags() if flags is None else flags
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if native:
        return "mixed_bfloat16", f"auto: no GPU; the CPU has native bf16 ({', '.join(native)})"
    return "float32", "auto: no GPU and no native bf16 on this CPU (avx512_bf16/amx_bf16)"


def balanced_class_weight(families: list[int] | None) -> dict[int, float]:
    if not families:
        raise DataError("--class-weight needs the family of every training note (json/wav source)")
    counts = np.bincount(families, minlength=NUM_CLASSES)
    present = counts > 0
    return {i: float(len(families) / (present.sum() * c)) if c else 0.0 for i, c in enumerate(counts)}


def learning_rate(config: TrainConfig, num_train: int, global_batch: int):
    """The learning rate, or with --lr-schedule cosine a decay from it to 0 over every step of --epochs."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                      config.epochs * -(-num_train // global_batch))
    return config.learning_rate


def one_hot(x: tf.Tensor, y: tf.Tensor):
    return x, tf.one_hot(y, NUM_CLASSES)


def float32_copy(model: keras.Model, config: TrainConfig) -> keras.Model:
    """The same weights in a float32 model: what every export gets, whatever the training policy."""
    keras.mixed_precision.set_global_policy("float32")
    clean = config.build_model()
    clean.set_weights(model.get_weights())
    return clean


def make_strategy(name: str) -> tuple[tf.distribute.Strategy, int, int]:
    """(strategy, number of workers, this worker's index); the index is 0 on the chief."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), 1, 0
    if name == "multiworker":
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        if "cluster" not in tf_config or "task" not in tf_config:
            raise RunError("--strategy multiworker needs TF_CONFIG with 'cluster' and 'task' (see README)")
        if "chief" in tf_config["cluster"]:
            raise RunError("TF_CONFIG: list every machine under 'worker'; worker 0 is the chief")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return strategy, len(tf_config["cluster"]["worker"]), int(tf_config["task"]["index"])
    if name != "default":
        raise SettingsError(f"--strategy {name!r}: choose default, mirrored or multiworker")
    return tf.distribute.get_strategy(), 1, 0


def with_shard_policy(ds: tf.data.Dataset, source: str) -> tf.data.Dataset:
    """File lists (json/wav) are sharded explicitly (OFF); sharded files (TFDS TFRecords) by file (FILE)."""
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.OFF if NOTE_SOURCES[source].file_list else policy.FILE
    return ds.with_options(options)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first NaN or infinite loss with an error naming the run (TerminateOnNaN only stops)."""

    def __init__(self, run_name: str):
        super().__init__()
        self.run_name, self.epoch = run_name, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise DivergedError(self.run_name, f"the loss became {float(loss)} at epoch {self.epoch + 1}, "
                                               f"batch {batch + 1}")


class KeepBest(keras.callbacks.Callback):
    """ModelCheckpoint(save_best_only=True, save_weights_only=True) on val_accuracy, written atomically."""

    def __init__(self, path: str, best: float = -math.inf):
        super().__init__()
        self.path, self.best = path, best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_accuracy")
        if value is not None and value > self.best:
            self.best = float(value)
            save_weights(self.model, self.path)


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose weights and epoch record are each written atomically: Keras 3.15 writes
    latest.weights.h5 in place, and a kill in the middle left a file no resume could open ("bad object header
    version number"). A kill between the two files reruns the epoch from its end weights: one epoch trained twice,
    not a broken run."""

    def _save_model(self):  # Keras 3.15's hook for the per-epoch save
        save_weights(self.model, self._weights_path)
        write_json(self._training_metadata_path, {"epoch": self._current_epoch, "batch": self._last_batch_seen})


def fit_callbacks(run: RunFolder, run_name: str, resuming: bool, patience: int, ema: bool = False) -> list:
    """Stop on NaN, keep the best epoch on valid, a per-epoch CSV log, TensorBoard, resume after a kill.

    With ``ema`` the weights' moving average is swapped in before validation and for the callbacks after it, so
    the epoch is scored, chosen and backed up by its average.

    BackupAndRestore comes last: an epoch is logged before its backup marks it finished, so a
    kill between the two reruns that epoch (the log keeps its last row) instead of losing it.
    """
    earlier = read_history(run.history_csv).get("val_accuracy")
    # A resumed run keeps its best epoch so far
    checkpoint = KeepBest(run.best_weights, max(earlier) if resuming and earlier else -math.inf)
    callbacks = [
        StopOnNonFinite(run_name),
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []),
        checkpoint,
        keras.callbacks.CSVLogger(run.history_csv, append=True),
        keras.callbacks.TensorBoard(run.logs),
    ]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=patience))
    callbacks.append(Backup(run.backup))
    return callbacks


# --------------------------------------------------------------------------- the four steps


@dataclass
class RunPaths:
    name: str
    final: RunFolder
    partial: RunFolder
    resuming: bool
    is_new: bool  # this call created the partial folder


def resume_settings(config: TrainConfig, spec: DataSpec) -> dict:
    """What must match for a killed run to be resumed. The cosine schedule decays over every step of --epochs,
    so with it the epochs must match too (another count would silently change the schedule)."""
    may_change = [k for k in RESUMABLE_CHANGES if not (k == "epochs" and config.lr_schedule == "cosine")]
    settings = {k: v for k, v in config.to_json().items() if k not in may_change}
    return {"settings": settings, "data": spec.to_json()}


def prepare_run_folder(config: TrainConfig, spec: DataSpec, worker: int = 0) -> RunPaths:
    """Check the names and the folders; clear, resume or create the partial folder. Deletes only what
    train itself writes: a partial folder of this run name, or (with --overwrite, after success) a run folder."""
    name = check_run_name(config.run_name or f"{config.model}-{datetime.now():%Y%m%d-%H%M%S}")
    check_output_dir(config.out, "--out")
    final = RunFolder(os.path.join(config.out, name))
    # Each worker checkpoints into its own folder; only the chief (worker 0) writes the run folder.
    partial = RunFolder(os.path.join(config.out, f".{name}.partial" + (f".worker{worker}" if worker else "")))
    if os.path.lexists(final.path):
        if not config.overwrite:
            raise RunError(f"{final.path} already exists; pass --overwrite to replace it or choose another --run-name")
        if not final.is_run():
            raise RunError(f"{final.path} exists but is not a run folder ({RunFolder.MODEL} and {RunFolder.CONFIG} "
                           "missing): refusing to replace it; choose another --run-name")
    started = resume_settings(config, spec)
    is_new = not os.path.isdir(partial.path)
    if not is_new and config.overwrite:
        remove(partial.path)
        is_new = True
    elif not is_new:
        saved = read_json(partial.started) if os.path.isfile(partial.started) else None
        has_progress = os.path.exists(partial.backup) or os.path.exists(partial.history_csv)
        if has_progress and saved != started:
            changed = sorted(k for k in {**started["settings"], **(saved or {}).get("settings", {})}
                             if started["settings"].get(k) != (saved or {}).get("settings", {}).get(k))
            if saved and saved.get("data") != started["data"]:
                changed.append("data")
            why = (" (--lr-schedule cosine decays over the run's --epochs, so they cannot change on resume)"
                   if "epochs" in changed else "")
            raise RunError(f"{partial.path} holds a killed run of {name!r} started with other settings "
                           f"({', '.join(changed) or 'unknown: no ' + RunFolder.STARTED}){why}; rerun it with the "
                           "same flags to resume it, or pass --overwrite to discard it")
        partial.remove_stale_temporaries()
    resuming = os.path.isdir(partial.backup)
    os.makedirs(partial.path, exist_ok=True)
    write_json(partial.started, started)
    return RunPaths(name, final, partial, resuming, is_new)


@dataclass
class TrainData:
    train: tf.data.Dataset  # batched (log-mel, family)
    valid: tf.data.Dataset  # the real valid notes
    test: tf.data.Dataset
    counts: dict[str, int | None]
    skipped: dict[str, list[str]]
    families: list[int] | None  # every training note's family, where known
    train_parts: dict[str, int]  # training notes from each folder (the data dir, extra folders)
    pretrain: tf.data.Dataset | None = None  # the extra notes alone, for --pretrain-epochs
    overlap_dropped: list[str] = dataclasses.field(default_factory=list)  # extra notes overlapping valid/test
    selection: tf.data.Dataset | None = None  # real valid + --select-extra notes: chooses the best epoch
    heldout: tf.data.Dataset | None = None  # the --select-extra notes alone (rendered, not NSynth)
    train_scoring: tf.data.Dataset | None = None  # the training notes in their cached order: the final score


def build_data(config: TrainConfig, spec: DataSpec, global_batch: int,
               shard: tuple[int, int] | None = None, worker: int | None = None) -> TrainData:
    """The run's datasets. ``worker``: this process's index in a multi-worker run, whose log-mel caches then go
    to a folder of its own: every worker scores valid and test itself, and two writers of one cache file collide
    (TensorFlow's "concurrent caching iterator" lockfile)."""
    cache_dir = os.path.join(config.cache_dir, f"worker{worker}") if config.cache_dir and worker is not None \
        else config.cache_dir
    if config.pretrain_epochs and not spec.extra_train:
        raise SettingsError("--pretrain-epochs needs --extra-train folders to pretrain on")
    # Pretraining keeps the extra notes apart (fine-tuning keeps --finetune-extra of them per real note);
    # otherwise they are mixed into the training notes.
    train_spec, part = spec, "all"
    if config.pretrain_epochs:
        part = "all" if config.finetune_extra else "real"
        train_spec = dataclasses.replace(spec, extra_ratio=config.finetune_extra or None, extra_balance=False)
    chain = make_wave_augment(config.recording_chain, config.onset_delay) \
        if config.recording_chain or config.onset_delay else None
    frontend = Frontend(compression=config.frontend)
    (train_ds, train_scoring), train_data = split_feature_batches(
        train_spec, "train", global_batch, training=True, seed=config.seed, cache_dir=cache_dir, shard=shard,
        part=part, wave_augment=chain, frontend=frontend)
    valid_ds, valid_data = split_features(spec, "valid", global_batch, cache_dir=cache_dir, part="real",
                                          frontend=frontend)
    test_ds, test_data = split_features(spec, "test", config.batch_size, cache_dir=cache_dir, frontend=frontend)
    splits = {"train": train_data, "valid": valid_data, "test": test_data}
    parts = dict(train_data.parts)
    pretrain, dropped = None, list(train_data.overlap_dropped)
    if config.pretrain_epochs:
        pretrain, extra = split_features(spec, "train", global_batch, training=True, seed=config.seed,
                                         cache_dir=cache_dir, shard=shard, part="extra", wave_augment=chain,
                                         frontend=frontend)
        parts.update({f"{folder} (pretraining)": n for folder, n in extra.parts.items()})
        dropped += extra.overlap_dropped
        splits["pretrain"] = extra
    selection = heldout = None
    selected, selected_count = valid_ds, valid_data.num_examples
    if config.select_on == "novel":
        novel = novel_notes(spec, "valid")
        if not novel:
            raise DataError("--select-on novel: every valid note has a twin among the training notes; use all")
        selected, _ = split_features(spec, "valid", global_batch, cache_dir=cache_dir, part="real",
                                     frontend=frontend, only_notes=novel)
        selection, selected_count = selected, len(novel)
    if spec.select_extra:
        heldout, splits["heldout"] = split_features(spec, "valid", global_batch, cache_dir=cache_dir,
                                                    part="extra", frontend=frontend)
        dropped += splits["heldout"].overlap_dropped
        selection = selected.concatenate(heldout)  # both already cached: no note is decoded twice
    counts = {s: d.num_examples for s, d in splits.items()}
    if selection is not None:
        counts["selection"] = selected_count + counts.get("heldout", 0)
    return TrainData(train_ds, valid_ds, test_ds, counts, {s: d.skipped for s, d in splits.items()},
                     train_data.families, parts, pretrain, dropped, selection, heldout, train_scoring)


def default_verbosity() -> int | str:
    """Keras fit verbosity: one line per epoch under CI (logs), progress bars otherwise."""
    return 2 if os.environ.get("CI") else "auto"


def fit(config: TrainConfig, data: TrainData, paths: RunPaths, strategy: tf.distribute.Strategy,
        spec: DataSpec, worker: int = 0, verbose: int | str | None = None) -> keras.Model:
    """Build, compile and fit; return the model with its best-on-valid weights."""
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    with strategy.scope():
        model = config.build_model()
        compile_model(model, learning_rate(config, data.counts["train"] or 1, global_batch), config.label_smoothing,
                      config.steps_per_execution, config.ema)
    class_weight = balanced_class_weight(data.families) if config.class_weight else None
    fit_ds = data.train.map(one_hot)
    fit_valid = (data.valid if data.selection is None else data.selection).map(one_hot)  # chooses the best epoch
    if config.augment:
        fit_ds = fit_ds.map(make_augment(config.augment), num_parallel_calls=tf.data.AUTOTUNE)
    run = paths.partial
    if data.pretrain is not None:
        pretrain(config, model, data, fit_valid, run, paths.name, verbose)
        if config.finetune_learning_rate:
            with strategy.scope():
                compile_model(model, config.finetune_learning_rate, config.label_smoothing,
                              config.steps_per_execution, config.ema)
    if config.strategy == "multiworker":
        distributed.fit(strategy, model, model.optimizer, with_shard_policy(fit_ds, spec.source), fit_valid,
                        epochs=config.epochs, work_dir=run.path, is_chief=worker == 0,
                        label_smoothing=config.label_smoothing, class_weight=class_weight, run_name=paths.name,
                        patience=config.early_stopping)
    else:
        # shuffle=False: the dataset is already shuffled (Keras ignores shuffle for datasets and warns).
        model.fit(fit_ds, validation_data=fit_valid, epochs=config.epochs, shuffle=False,
                  callbacks=fit_callbacks(run, paths.name, paths.resuming, config.early_stopping, config.ema > 0),
                  class_weight=class_weight, verbose=default_verbosity() if verbose is None else verbose)
    if os.path.exists(run.best_weights):
        model.load_weights(run.best_weights)
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        raise DivergedError(paths.name, "the trained weights are not finite")
    return model


def pretrain(config: TrainConfig, model: keras.Model, data: TrainData, fit_valid: tf.data.Dataset,
             run: RunFolder, run_name: str, verbose: int | str | None = None) -> None:
    """Train on the extra notes alone; a resumed run reuses the pretrained weights."""
    if os.path.exists(run.file(RunFolder.PRETRAINED_WEIGHTS)):
        model.load_weights(run.file(RunFolder.PRETRAINED_WEIGHTS))
        return
    ds = data.pretrain.map(one_hot)
    if config.augment:
        ds = ds.map(make_augment(config.augment), num_parallel_calls=tf.data.AUTOTUNE)
    print(f"Pretraining {config.pretrain_epochs} epochs on the extra notes, then fine-tuning on the real ones")
    model.fit(ds, validation_data=fit_valid, epochs=config.pretrain_epochs, shuffle=False,
              callbacks=[StopOnNonFinite(run_name)], verbose=default_verbosity() if verbose is None else verbose)
    model.save_weights(run.file(RunFolder.PRETRAINED_WEIGHTS))


def finish(config: TrainConfig, spec: DataSpec, paths: RunPaths, model: keras.Model, data: TrainData,
           policy: str, why: str, train_seconds: float) -> dict:
    """Score the float32 model, write every output into the partial folder, then rename it into place."""
    model = float32_copy(model, config)
    compile_model(model, config.learning_rate)
    scores = {}
    scored = [("train", data.train_scoring or data.train), ("valid", data.valid), ("test", data.test)]
    if data.heldout is not None:
        scored.append(("heldout_rendered", data.heldout))  # rendered instruments held out of training: not NSynth
    for split, ds in scored:
        result = model.evaluate(ds.map(one_hot), verbose=0, return_dict=True)
        scores[split] = {k: float(v) for k, v in result.items()}
    run = paths.partial
    history = read_history(run.history_csv)
    model.save(run.model)
    tflite.write_savedmodel(model, run.saved_model)
    if config.tflite:
        tflite.write_tflite(model, "fp32", run.tflite)
    write_labels(run.labels)
    write_json(run.history, history)
    plots.plot_learning_curves(history, run.curves)
    write_json(run.config, {
        "settings": config.to_json(),
        "data": spec.to_json(),
        "model": {"name": config.model, "params": model.count_params()},
        "precision_policy": policy,
        "precision_reason": why,
        "frontend": Frontend(compression=config.frontend).to_json(),
        "families": list(FAMILIES),
        "notes": data.counts,
        "train_notes_by_folder": data.train_parts,
        "extra_notes_dropped_as_overlap": {"count": len(data.overlap_dropped), "notes": data.overlap_dropped},
        "scores": scores,
        "bad_notes_skipped": {"count": sum(map(len, data.skipped.values())), "notes": data.skipped},
        "train_seconds": round(train_seconds, 1),
        "tflite_note": f"{RunFolder.TFLITE} is the fp32 model; python -m nsynth_keras.export adds "
                       + ", ".join(v for v in tflite.variant_files().values() if v != RunFolder.TFLITE),
        "versions": package_versions(),
        "created": datetime.now().isoformat(timespec="seconds"),
    })
    for name in RunFolder.TRAINING_ONLY:
        remove(run.file(name))
    run.remove_stale_temporaries()
    replace(run.path, paths.final.path)  # --overwrite: the old run is swapped out only now
    return scores


def train(config: TrainConfig, spec: DataSpec, log=print, verbose: int | str | None = None) -> str | None:
    """Train and write the run folder; return its path (None on a non-chief worker).
    verbose: Keras fit's (0 silent, 1 progress bar, 2 a line per epoch; default 2 under CI, else a bar).
    Keras's global precision policy is set for the run and put back afterwards, whatever happens."""
    previous = keras.mixed_precision.global_policy()
    try:
        return _train(config, spec, log, verbose)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(config: TrainConfig, spec: DataSpec, log, verbose) -> str | None:
    config.validate()
    # A MultiWorkerMirroredStrategy must exist before any other TF op.
    strategy, num_workers, worker = make_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    name = check_run_name(config.run_name or f"{config.model}-{datetime.now():%Y%m%d-%H%M%S}")
    config = dataclasses.replace(config, run_name=name)
    if config.cache_dir:
        check_output_dir(config.cache_dir, "--cache-dir")
    check_output_dir(config.out, "--out")
    check_free_space(config.out)
    # One writer per run name: everything below (clearing, resuming, renaming) happens under the lock.
    with pid_lock(os.path.join(config.out, f".{name}.lock" + (f".worker{worker}" if worker else "")),
                  f"another train of run {name!r} in {config.out}"):
        return _train_locked(config, spec, log, verbose, strategy, num_workers, worker)


def _train_locked(config: TrainConfig, spec: DataSpec, log, verbose, strategy: tf.distribute.Strategy,
                  num_workers: int, worker: int) -> str | None:
    paths = prepare_run_folder(config, spec, worker)
    try:
        policy, why = resolve_precision(config.mixed_precision)
        keras.mixed_precision.set_global_policy(policy)
        log(f"Run {paths.name}: model {config.model}, precision {policy} ({why}), seed {config.seed}"
            + (" (resuming from its last finished epoch)" if paths.resuming else ""))
        t0 = time.time()
        global_batch = config.batch_size * strategy.num_replicas_in_sync
        shard = (num_workers, worker) if num_workers > 1 and NOTE_SOURCES[spec.source].file_list else None
        if config.strategy != "default":
            log(f"Strategy {config.strategy}: {num_workers} worker(s), {strategy.num_replicas_in_sync} replica(s) "
                f"in sync, global batch {global_batch} ({config.batch_size} per replica)"
                + (f"; this worker reads train shard {worker + 1}/{num_workers}" if shard else ""))
        data = build_data(config, spec, global_batch, shard, worker if num_workers > 1 else None)
        log(f"Data ({spec.source}): {data.counts['train']} train, {data.counts['valid']} valid, "
            f"{data.counts['test']} test notes; {sum(map(len, data.skipped.values()))} bad notes skipped")
        model = fit(config, data, paths, strategy, spec, worker, verbose)
    except BaseException as err:
        # A run that never finished an epoch, or diverged, leaves nothing behind; one with progress
        # stays resumable.
        if paths.is_new and (not os.path.exists(paths.partial.history_csv) or isinstance(err, DivergedError)):
            remove(paths.partial.path)
        raise
    if worker:
        remove(paths.partial.path)
        log(f"Worker {worker} finished {config.epochs} epochs; the chief writes {paths.final.path}")
        return None
    scores = finish(config, spec, paths, model, data, policy, why, time.time() - t0)
    log(f"\n{'split':<7}{'accuracy':>10}{'top-3':>8}{'loss':>8}")
    for split, s in scores.items():
        log(f"{split:<7}{s['accuracy']:>10.3f}{s['top3']:>8.3f}{s['loss']:>8.3f}")
    log(f"\nWrote {paths.final.path} in {time.time() - t0:.0f} s")
    return paths.final.path
