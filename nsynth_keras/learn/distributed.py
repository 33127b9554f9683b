"""Multi-worker training with tf.distribute.MultiWorkerMirroredStrategy.

Keras 3's `Model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585:
"Attempt to convert a value (PerReplica...)", seen here with TF 2.17 / Keras 3.15), so several
machines train the same Keras model with this custom loop in the style of the TensorFlow
"custom training with tf.distribute" tutorial: the loss averaged over the notes of each global step,
gradients all-reduced by the strategy, one checkpoint per epoch for resuming.
"""

from __future__ import annotations

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from nsynth_keras.core.config import NUM_CLASSES
from nsynth_keras.core.files import append_history, read_history
from nsynth_keras.models.runs import DivergedError, RunFolder, save_weights


def _metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    top3 = np.argsort(probs, axis=1)[:, -3:]
    truth = y.argmax(1)
    loss = -np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-7, 1.0))
    return {"accuracy": float((probs.argmax(1) == truth).mean()), "loss": float(loss.mean()),
            "top3": float((top3 == truth[:, None]).any(1).mean())}


def fit(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    train_ds: tf.data.Dataset,
    valid_ds: tf.data.Dataset,
    *,
    epochs: int,
    work_dir: str,
    is_chief: bool,
    label_smoothing: float = 0.0,
    class_weight: dict[int, float] | None = None,
    run_name: str = "",
    patience: int = 0,
) -> None:
    """Train `model` (built in `strategy.scope()`) and log per-epoch metrics to
    work_dir/history.csv as CSVLogger does and to TensorBoard in work_dir/logs (the same train/ and
    validation/ event folders and epoch_* tags as Keras's callback); keep the best-on-valid weights in
    work_dir/best.weights.h5 (chief); stop after `patience` epochs without a better val_accuracy
    (every worker sees the same all-reduced metrics, so all stop together). A rerun resumes from
    work_dir/backup."""
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction=None)
    weights = tf.constant([(class_weight or {}).get(i, 1.0) for i in range(NUM_CLASSES)], tf.float32)

    @tf.function
    def train_step(batch):
        def replica(x, y):
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                per_example = loss_fn(y, probs) * tf.gather(weights, tf.argmax(y, axis=1))
                # The mean over the notes of this step on all replicas (exact for a short last batch).
                count = tf.cast(tf.shape(x)[0], tf.float32)
                step_count = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, count)
                loss = tf.reduce_sum(per_example) / step_count
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            hits = tf.cast(tf.equal(tf.argmax(probs, 1), tf.argmax(y, 1)), tf.float32)
            in_top3 = tf.cast(tf.math.in_top_k(tf.argmax(y, 1), probs, 3), tf.float32)
            return tf.reduce_sum(per_example), tf.reduce_sum(hits), tf.reduce_sum(in_top3), count

        per_replica = strategy.run(replica, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]

    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    run = RunFolder(work_dir)
    manager = tf.train.CheckpointManager(checkpoint, run.backup, max_to_keep=1)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        print(f"Resumed from epoch {int(epoch_var.numpy())}")
    earlier = read_history(run.history_csv).get("val_accuracy", [])
    best = max(earlier, default=-1.0)
    since_best = len(earlier) - 1 - int(np.argmax(earlier)) if earlier else 0
    writers = ({part: tf.summary.create_file_writer(os.path.join(run.logs, part)) for part in ("train", "validation")}
               if is_chief else {})
    dist_train = strategy.experimental_distribute_dataset(train_ds)
    for epoch in range(int(epoch_var.numpy()), epochs):
        if patience and since_best >= patience:
            print(f"Early stopping: no better val_accuracy for {patience} epochs")
            break
        loss = hits = top3 = n = 0.0
        start = time.perf_counter()
        for batch in dist_train:
            step_loss, step_hits, step_top3, step_n = train_step(batch)
            loss, hits, top3, n = (loss + float(step_loss), hits + float(step_hits), top3 + float(step_top3),
                                   n + float(step_n))
        seconds = time.perf_counter() - start
        print(f"Epoch {epoch + 1} trained in {seconds:.0f} s: {n:.0f} notes on all workers, {n / seconds:.0f} "
              "notes/s", flush=True)
        if not math.isfinite(loss):
            raise DivergedError(run_name, f"the loss became {loss / n} in epoch {epoch + 1}")
        # Every worker scores the whole validation split with the same (synchronised) weights.
        probs, ys = zip(*((model(x, training=False).numpy(), y.numpy()) for x, y in valid_ds))
        val = _metrics(np.concatenate(probs), np.concatenate(ys))
        row = {"epoch": epoch, "accuracy": hits / n, "loss": loss / n, "top3": top3 / n,
               **{f"val_{k}": v for k, v in val.items()}}
        print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in row.items() if k != "epoch"),
              flush=True)
        improved = val["accuracy"] > best
        best, since_best = (val["accuracy"], 0) if improved else (best, since_best + 1)
        if is_chief:
            if improved:
                save_weights(model, run.best_weights)
            append_history(run.history_csv, row)
            for part, prefix in (("train", ""), ("validation", "val_")):
                with writers[part].as_default(step=epoch):
                    for metric in ("accuracy", "loss", "top3"):
                        tf.summary.scalar(f"epoch_{metric}", row[prefix + metric])
                writers[part].flush()
        epoch_var.assign(epoch + 1)
        manager.save()
