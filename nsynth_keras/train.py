"""Train a CNN on NSynth log-mels and write a complete run folder.

    python -m nsynth_keras.train --data-dir ../shared/nsynth --epochs 3

The run folder (saved_models/<run-name>/) gets model.keras, saved_model/, model.tflite,
labels.txt, history.json, config.json, learning_curves.png and TensorBoard logs/. It is
written under a temporary name and renamed when complete. Rerunning a killed run with the
same --run-name resumes it from its last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from datetime import datetime

import keras
import numpy as np
import tensorflow as tf

from nsynth_keras.config import DEFAULT_RUNS_DIR, FAMILIES, NUM_CLASSES
from nsynth_keras.data import DataError, DataSpec, add_data_args, spec_from_args
from nsynth_keras.features import AUGMENTATIONS, FRONTEND, make_augment
from nsynth_keras.model import HOMEWORK, build_cnn
from nsynth_keras.pipeline import split_features
from nsynth_keras.runs import RunError, package_versions, write_json, write_labels

PRECISIONS = {"off": "float32", "on": "mixed_float16", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nsynth_keras.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_args(p)
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=("baseline", "cnn"), default="baseline",
                   help="baseline: the homework CNN; cnn: configured by the flags below")
    m.add_argument("--filters", type=int, nargs="+", default=list(HOMEWORK["filters"]),
                   help="kernels per conv block (cnn; default: %(default)s)")
    m.add_argument("--kernel-size", type=int, default=3, help="conv kernel size (cnn)")
    m.add_argument("--padding", choices=("same", "valid"), default="same", help="conv padding (cnn)")
    m.add_argument("--strides", type=int, choices=(1, 2), default=1, help="conv strides (cnn)")
    m.add_argument("--dropout", type=float, default=0.0, help="Dropout rate after each block (cnn)")
    m.add_argument("--dense-units", type=int, default=0, help="hidden Dense width before the classifier, 0: none (cnn)")
    m.add_argument("--batch-norm", action="store_true", help="batch normalisation after each conv (cnn)")
    m.add_argument("--global-pool", action="store_true", help="global average pooling instead of Flatten (cnn)")
    m.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (cnn)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=20, help="epochs (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    t.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    t.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="learning-rate schedule over the epochs")
    t.add_argument("--augment", nargs="+", default=[], choices=AUGMENTATIONS, metavar="AUG",
                   help=f"training-only augmentations: {', '.join(AUGMENTATIONS)}")
    t.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing for the cross-entropy")
    t.add_argument("--class-weight", action="store_true",
                   help="weight the loss by inverse family frequency (balanced)")
    t.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better val_accuracy (0: off)")
    t.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling (default: %(default)s)")
    t.add_argument("--deterministic", action="store_true",
                   help="enable TF op determinism: identical metrics for identical runs (slower); "
                        "--augment draws from stateful RNGs and is not bit-reproducible")
    t.add_argument("--mixed-precision", choices=("auto", "on", "off", "bf16"), default="auto",
                   help="auto: mixed_float16 when a GPU is visible, else float32; on: mixed_float16; "
                        "bf16: mixed_bfloat16 (fast on CPUs with AVX512-BF16); exports are always float32")
    t.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                   help="default: one device; mirrored: all GPUs of this machine; multiworker: several machines "
                        "(TF_CONFIG). --batch-size is per replica: the global batch is it x replicas")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=DEFAULT_RUNS_DIR, help="folder for run folders (default: %(default)s)")
    o.add_argument("--run-name", default=None, help="run folder name (default: <model>-<timestamp>); "
                   "reuse a killed run's name to resume it")
    o.add_argument("--overwrite", action="store_true", help="replace an existing run folder of that name")
    o.add_argument("--cache-dir", default=None,
                   help="cache log-mels in files here (keyed by frontend and data settings); default: in memory")
    o.add_argument("--no-tflite", action="store_true", help="skip the model.tflite export")
    return p


def resolve_precision(choice: str) -> str:
    if choice == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return PRECISIONS[choice]


def model_kwargs(args: argparse.Namespace) -> dict:
    if args.model == "baseline":
        return dict(HOMEWORK, name="baseline")
    return {
        "filters": tuple(args.filters), "kernel_size": args.kernel_size, "padding": args.padding,
        "strides": args.strides, "dropout": args.dropout, "dense_units": args.dense_units,
        "batch_norm": args.batch_norm, "global_pool": args.global_pool, "weight_decay": args.weight_decay,
    }


def balanced_class_weight(families: list[int] | None) -> dict[int, float]:
    if not families:
        raise DataError("--class-weight needs the family of every training note (json/wav source)")
    counts = np.bincount(families, minlength=NUM_CLASSES)
    present = counts > 0
    return {i: float(len(families) / (present.sum() * c)) if c else 0.0 for i, c in enumerate(counts)}


def one_hot(x: tf.Tensor, y: tf.Tensor):
    return x, tf.one_hot(y, NUM_CLASSES)


def compile_model(model: keras.Model, learning_rate, label_smoothing: float = 0.0) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(3, name="top3")],
    )


def float32_copy(model: keras.Model, kwargs: dict) -> keras.Model:
    """The same weights in a float32 model: what every export gets, whatever the training policy."""
    keras.mixed_precision.set_global_policy("float32")
    clean = build_cnn(**kwargs)
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
    return tf.distribute.get_strategy(), 1, 0


def train(args: argparse.Namespace, spec: DataSpec) -> str | None:
    """Train and write the run folder; return its path (None on a non-chief worker)."""
    # A MultiWorkerMirroredStrategy must exist before any other TF op.
    strategy, num_workers, worker = make_strategy(args.strategy)
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    run_name = args.run_name or f"{args.model}-{datetime.now():%Y%m%d-%H%M%S}"
    final_dir = os.path.join(args.out, run_name)
    # Each worker checkpoints into its own folder; only the chief (worker 0) writes the run folder.
    work_dir = os.path.join(args.out, f".{run_name}.partial" + (f".worker{worker}" if worker else ""))
    if os.path.exists(final_dir) and not args.overwrite:
        raise RunError(f"{final_dir} already exists; pass --overwrite to replace it or choose another --run-name")
    resuming = os.path.isdir(os.path.join(work_dir, "backup"))
    os.makedirs(work_dir, exist_ok=True)

    policy = resolve_precision(args.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    print(f"Run {run_name}: model {args.model}, precision {policy}, seed {args.seed}"
          + (" (resuming from its last finished epoch)" if resuming else ""))

    t0 = time.time()
    global_batch = args.batch_size * strategy.num_replicas_in_sync
    shard = (num_workers, worker) if num_workers > 1 and spec.source == "jsonwav" else None
    if args.strategy != "default":
        print(f"Strategy {args.strategy}: {num_workers} worker(s), {strategy.num_replicas_in_sync} replica(s) "
              f"in sync, global batch {global_batch} ({args.batch_size} per replica)"
              + (f"; this worker reads train shard {worker + 1}/{num_workers}" if shard else ""))
    train_ds, train_data = split_features(spec, "train", global_batch, training=True, seed=args.seed,
                                          cache_dir=args.cache_dir, shard=shard)
    valid_ds, valid_data = split_features(spec, "valid", global_batch, cache_dir=args.cache_dir)
    test_ds, test_data = split_features(spec, "test", args.batch_size, cache_dir=args.cache_dir)
    skipped = {s: d.skipped for s, d in (("train", train_data), ("valid", valid_data), ("test", test_data))}
    print(f"Data ({spec.source}): {train_data.num_examples} train, {valid_data.num_examples} valid, "
          f"{test_data.num_examples} test notes; {sum(map(len, skipped.values()))} bad notes skipped")

    kwargs = model_kwargs(args)
    steps = args.epochs * -(-(train_data.num_examples or 1) // global_batch)
    lr = (keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
          if args.lr_schedule == "cosine" else args.learning_rate)
    with strategy.scope():
        model = build_cnn(**kwargs)
        compile_model(model, lr, args.label_smoothing)
    best_path = os.path.join(work_dir, "best.weights.h5")
    class_weight = balanced_class_weight(train_data.families) if args.class_weight else None
    fit_ds, fit_valid = train_ds.map(one_hot), valid_ds.map(one_hot)
    if args.augment:
        fit_ds = fit_ds.map(make_augment(args.augment), num_parallel_calls=tf.data.AUTOTUNE)
    if args.strategy == "multiworker":
        from nsynth_keras import distributed

        distributed.fit(strategy, model, model.optimizer, with_shard_policy(fit_ds, spec.source), fit_valid,
                        epochs=args.epochs, work_dir=work_dir, is_chief=worker == 0,
                        label_smoothing=args.label_smoothing, class_weight=class_weight)
    else:
        model.fit(fit_ds, validation_data=fit_valid, epochs=args.epochs,
                  callbacks=fit_callbacks(work_dir, best_path, resuming, args.early_stopping),
                  class_weight=class_weight, verbose=2 if os.environ.get("CI") else "auto")
    if worker:
        shutil.rmtree(work_dir, ignore_errors=True)
        print(f"Worker {worker} finished {args.epochs} epochs; the chief writes {final_dir}")
        return None
    if os.path.exists(best_path):
        model.load_weights(best_path)
    train_seconds = time.time() - t0

    model = float32_copy(model, kwargs)
    compile_model(model, args.learning_rate)
    scores = {}
    for split, ds in (("train", train_ds), ("valid", valid_ds), ("test", test_ds)):
        # The train split is scored without shuffling effects: order does not change accuracy.
        result = model.evaluate(ds.map(one_hot), verbose=0, return_dict=True)
        scores[split] = {k: float(v) for k, v in result.items()}

    history = read_history(os.path.join(work_dir, "history.csv"))
    write_outputs(model, work_dir, args, spec, kwargs, policy, scores, history, skipped, train_seconds)
    for leftover in ("backup", "best.weights.h5", "history.csv"):
        path = os.path.join(work_dir, leftover)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path) if os.path.exists(path) else None
    if os.path.exists(final_dir):  # --overwrite
        shutil.rmtree(final_dir)
    os.rename(work_dir, final_dir)

    print(f"\n{'split':<7}{'accuracy':>10}{'top-3':>8}{'loss':>8}")
    for split, s in scores.items():
        print(f"{split:<7}{s['accuracy']:>10.3f}{s['top3']:>8.3f}{s['loss']:>8.3f}")
    print(f"\nWrote {final_dir} in {time.time() - t0:.0f} s")
    return final_dir


def fit_callbacks(work_dir: str, best_path: str, resuming: bool, patience: int) -> list:
    """Resume after a kill, keep the best epoch on valid, TensorBoard and a per-epoch CSV log."""
    checkpoint = keras.callbacks.ModelCheckpoint(best_path, monitor="val_accuracy", save_best_only=True,
                                                 save_weights_only=True)
    earlier = read_history(os.path.join(work_dir, "history.csv")).get("val_accuracy")
    if resuming and earlier:
        checkpoint.best = max(earlier)  # a resumed run keeps its best epoch so far
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(work_dir, "backup")),
        checkpoint,
        keras.callbacks.TensorBoard(os.path.join(work_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(work_dir, "history.csv"), append=True),
    ]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=patience))
    return callbacks


def with_shard_policy(ds: tf.data.Dataset, source: str) -> tf.data.Dataset:
    """json/wav file lists are sharded explicitly (OFF); TFDS TFRecords by file (FILE)."""
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.OFF if source == "jsonwav" else policy.FILE
    return ds.with_options(options)


def read_history(csv_path: str) -> dict[str, list[float]]:
    """Per-epoch metrics from the CSVLogger file, which survives a resume, unlike History.

    A kill between two callbacks can log an epoch that is then run again: the last row wins.
    """
    import csv

    if not os.path.exists(csv_path):
        return {}
    with open(csv_path, encoding="utf-8") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f) if row.get("epoch")}
    history: dict[str, list[float]] = {}
    for _, row in sorted(rows.items()):
        for key, value in row.items():
            history.setdefault(key, []).append(int(value) if key == "epoch" else float(value))
    return history


def write_outputs(model, work_dir, args, spec, kwargs, policy, scores, history, skipped, train_seconds) -> None:
    from nsynth_keras.export import VARIANTS, to_tflite, write_bytes, write_savedmodel
    from nsynth_keras.visualize import plot_learning_curves

    model.save(os.path.join(work_dir, "model.keras"))
    write_savedmodel(model, os.path.join(work_dir, "saved_model"))
    if not args.no_tflite:
        write_bytes(os.path.join(work_dir, "model.tflite"), to_tflite(model, "fp32"))
    write_labels(os.path.join(work_dir, "labels.txt"))
    write_json(os.path.join(work_dir, "history.json"), history)
    plot_learning_curves(history, os.path.join(work_dir, "learning_curves.png"))
    write_json(os.path.join(work_dir, "config.json"), {
        "settings": vars(args),
        "data": spec.to_json(),
        "model": {"builder": "build_cnn", "kwargs": {**kwargs, "filters": list(kwargs["filters"])},
                  "params": model.count_params()},
        "precision_policy": policy,
        "frontend": FRONTEND,
        "families": list(FAMILIES),
        "scores": scores,
        "bad_notes_skipped": {"count": sum(map(len, skipped.values())), "notes": skipped},
        "train_seconds": round(train_seconds, 1),
        "tflite_note": "model.tflite is the fp32 model; python -m nsynth_keras.export adds "
                       + ", ".join(VARIANTS.values()),
        "versions": package_versions(),
        "created": datetime.now().isoformat(timespec="seconds"),
    })


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.epochs < 1 or args.batch_size < 1:
            raise DataError("--epochs and --batch-size must be at least 1")
        spec = spec_from_args(args)
        train(args, spec)
    except (DataError, RunError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
