"""Note datasets -> batched (log-mel, family) datasets for Keras: features, cache, batch, prefetch."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from nsynth_keras.data.datasets import SHUFFLE_BUFFER, DataSpec, SplitData, make_dataset
from nsynth_keras.data.features import DEFAULT_FRONTEND, Frontend, log_mel

# Notes per log-mel cache file (160 MB): TensorFlow's cache writer holds memory until its file is finished; writing
# 30,993 notes into one file grew a first epoch by 195 MB, about 6 KiB a note (a pipeline-only probe).
CACHE_CHUNK = 10_000


def cache_key(spec: DataSpec, split: str, shard: tuple[int, int] | None = None, part: str = "all",
              seed: int = 0, frontend: Frontend = DEFAULT_FRONTEND) -> str:
    """Changes whenever the frontend or the notes selected change, so a stale cache is never read.
    The seed chooses the --max-examples and --extra-ratio samples, so it is part of the key."""
    text = json.dumps({"frontend": frontend.to_json(), "data": spec.to_json(), "split": split, "shard": shard,
                       "part": part, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_features(ex: dict, frontend: Frontend = DEFAULT_FRONTEND) -> tuple[tf.Tensor, tf.Tensor]:
    return log_mel(ex["audio"], frontend), ex["family"]


def feature_dataset(notes: tf.data.Dataset, batch_size: int, **options) -> tf.data.Dataset:
    """Batched (log-mel [b, 64, 64, 1], family [b]) from a note dataset (``options``: those of feature_batches).

    Features are computed once and cached (``cache``: "memory", a file prefix, or None),
    so augmentation, mapped on the batches afterwards, sees fresh randomness each epoch.
    ``wave_augment`` (training notes, before the frontend) makes features differ each epoch: nothing is cached.
    """
    return feature_batches(notes, batch_size, **options)[0]


def feature_batches(
    notes: tf.data.Dataset | None,
    batch_size: int,
    *,
    training: bool = False,
    seed: int = 0,
    cache: str | None = "memory",
    wave_augment: Callable[[dict], dict] | None = None,
    chunks: list[tuple[tf.data.Dataset, str]] | None = None,
    frontend: Frontend = DEFAULT_FRONTEND,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """feature_dataset's batches, and the same notes' batches in their cached order over the same cache: what
    scores the training split without a second shuffle buffer.
    ``chunks``: the notes in consecutive parts, each with its cache file name, instead of ``notes`` and ``cache``
    (SplitData.chunks). ``frontend``: the features to compute (the run's)."""
    features_of = functools.partial(to_features, frontend=frontend)
    if wave_augment is not None:
        notes, cache = notes.map(wave_augment, num_parallel_calls=tf.data.AUTOTUNE), None
    if cache and cache != "memory":
        os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
        parts = chunks or [(notes, cache)]
        features = functools.reduce(tf.data.Dataset.concatenate, [
            part.map(features_of, num_parallel_calls=tf.data.AUTOTUNE).cache(name) for part, name in parts])
    else:
        features = notes.map(features_of, num_parallel_calls=tf.data.AUTOTUNE)
        if cache == "memory":
            features = features.cache()
    ds = features
    if training and cache:
        # The file list was shuffled before decoding, but a cache replays its first order: reshuffle each epoch.
        # Uncached features (wave_augment) follow the file list's new order every epoch already; a buffer there
        # would hold back the first batch until a whole epoch of features was computed (measured: 4.6 s vs 0.4 s
        # for the 993 real training notes with the recording chain).
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    return (ds.batch(batch_size).prefetch(tf.data.AUTOTUNE),
            features.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def split_features(spec: DataSpec, split: str, batch_size: int, **options) -> tuple[tf.data.Dataset, SplitData]:
    """make_dataset + feature_dataset for one split; file cache under cache_dir if given (``options``: those of
    split_feature_batches)."""
    (ds, _), data = split_feature_batches(spec, split, batch_size, **options)
    return ds, data


def split_feature_batches(
    spec: DataSpec,
    split: str,
    batch_size: int,
    *,
    training: bool = False,
    seed: int = 0,
    cache_dir: str | None = None,
    shard: tuple[int, int] | None = None,
    part: str = "all",
    wave_augment: Callable[[dict], dict] | None = None,
    frontend: Frontend = DEFAULT_FRONTEND,
    only_notes: frozenset[str] | None = None,
) -> tuple[tuple[tf.data.Dataset, tf.data.Dataset], SplitData]:
    """make_dataset + feature_batches for one split: (batches, batches in cached order), the note data.
    ``only_notes``: keep just these notes (by note name), e.g. the novel valid notes that choose the best epoch."""
    data = make_dataset(spec, split, shuffle=training, seed=seed, shard=shard, part=part)
    if only_notes is not None:
        part += "-" + hashlib.sha256("\n".join(sorted(only_notes)).encode()).hexdigest()[:8]  # another cache
    key = cache_key(spec, split, shard, part, seed, frontend)
    cache = os.path.join(cache_dir, f"{split}-{key}", "features") if cache_dir else "memory"
    if cache_dir and data.chunks and wave_augment is None and only_notes is None:
        # Each chunk streams its own note list: the split's in-memory dataset is never made.
        return feature_batches(None, batch_size, training=training, seed=seed, cache=cache, frontend=frontend,
                               chunks=data.chunks(CACHE_CHUNK, cache)), data
    notes = data.dataset
    if only_notes is not None:
        names = tf.constant(sorted(only_notes), tf.string)
        notes = notes.filter(lambda note: tf.reduce_any(tf.equal(note["note"], names)))
    return feature_batches(notes, batch_size, training=training, seed=seed, cache=cache, wave_augment=wave_augment,
                           frontend=frontend), data


def eval_dataset(spec: DataSpec, split: str, batch_size: int = 64,
                 frontend: Frontend | None = DEFAULT_FRONTEND) -> tf.data.Dataset:
    """Every note of a split in file order, batched: its fields plus its log-mel (by ``frontend``) as ``mel``
    (none with ``frontend=None``: a caller that feeds audio or computes its own features)."""
    notes = make_dataset(spec, split).dataset
    if frontend is not None:
        notes = notes.map(lambda e: {**e, "mel": log_mel(e["audio"], frontend)}, num_parallel_calls=tf.data.AUTOTUNE)
    return notes.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_split(spec: DataSpec, split: str, keys: tuple[str, ...] = ("mel", "family"),
               frontend: Frontend = DEFAULT_FRONTEND) -> dict[str, np.ndarray]:
    """The named fields of every note of a split, in memory (for evaluation and plots, not training)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for batch in eval_dataset(spec, split, frontend=frontend):
        for k in keys:
            parts[k].append(batch[k].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}
