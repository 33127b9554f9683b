"""The log-mel frontend: one function for Dataset.map and the same code as a Keras layer."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_io as tfio

from nsynth_keras.config import F_MAX, F_MIN, HOP_LENGTH, INPUT_SHAPE, N_FFT, N_MELS, SAMPLE_RATE, TOP_DB

# Frontend parameters in one dict: recorded in every run and part of the feature-cache key.
FRONTEND = {
    "sample_rate": SAMPLE_RATE,
    "n_fft": N_FFT,
    "hop_length": HOP_LENGTH,
    "n_mels": N_MELS,
    "f_min": F_MIN,
    "f_max": F_MAX,
    "top_db": TOP_DB,
    "normalisation": "dB re the note's loudest bin, floored at -top_db, scaled to [-1, 1]; silence -> -1",
}


SILENCE = 1e-5  # mel magnitude; its power is dbscale's amin (1e-10)


def _note_peak(power: tf.Tensor) -> tf.Tensor:
    return tf.reduce_max(power, axis=[-2, -1], keepdims=True)


def log_mel(waveform: tf.Tensor) -> tf.Tensor:
    """Waveform [..., 64000] -> log-mel [..., 64 frames, 64 mels, 1] in [-1, 1].

    Per-note normalisation: dB relative to the note's own loudest mel bin (so the
    velocity and recording level do not matter), floored at -TOP_DB, then scaled to
    [-1, 1]. Works on one note or a batch.
    """
    spec = tfio.audio.spectrogram(waveform, nfft=N_FFT, window=N_FFT, stride=HOP_LENGTH)
    mel = tfio.audio.melscale(spec, rate=SAMPLE_RATE, mels=N_MELS, fmin=F_MIN, fmax=F_MAX)
    # ref is per note, so each note's maximum is 0 dB and the top_db floor is per note too.
    db = tfio.audio.dbscale(mel, top_db=TOP_DB, ref=_note_peak)
    features = db / (TOP_DB / 2) + 1.0
    # A silent note has no peak to refer to: give it the floor (-1), not a flat 0 dB.
    silent = tf.reduce_max(mel, axis=[-2, -1], keepdims=True) <= SILENCE
    return tf.where(silent, -1.0, features)[..., tf.newaxis]


@keras.saving.register_keras_serializable(package="nsynth_keras")
class LogMel(keras.layers.Layer):
    """`log_mel` as a layer, so a model can take raw 16 kHz audio [batch, 64000]."""

    def call(self, inputs):
        return log_mel(tf.cast(inputs, tf.float32))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *INPUT_SHAPE)


# --------------------------------------------------------------------------- augmentation
# Training-only functions on batches of cached features (x [b, 64, 64, 1], one-hot y [b, 11]) -> (x, y).
# Adding one: a function and the @augmentation decorator; --augment NAME then applies it, in this order.

AUGMENTATIONS: dict[str, Callable] = {}


def augmentation(name: str):
    def register(fn: Callable) -> Callable:
        AUGMENTATIONS[name] = fn
        return fn

    return register


@augmentation("specaugment")
def spec_augment(x: tf.Tensor, y: tf.Tensor, time_param: int = 10, freq_param: int = 8):
    """SpecAugment time and frequency masks (tfio), one draw per note."""
    def one(mel):
        mel = tfio.audio.time_mask(mel, param=time_param)
        return tfio.audio.freq_mask(mel, param=freq_param)

    return tf.map_fn(one, x[..., 0])[..., tf.newaxis], y


@augmentation("gain")
def gain(x: tf.Tensor, y: tf.Tensor, max_db: float = 6.0):
    # Features are dB re each note's peak, so a gain is an offset of the whole note.
    db = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], -max_db, max_db)
    return tf.clip_by_value(x + db / (TOP_DB / 2), -1.0, 1.0), y


@augmentation("shift")
def shift(x: tf.Tensor, y: tf.Tensor, max_frames: int = 6):
    """Delay the note by 0..max_frames frames (the front is filled with silence, -1)."""
    k = tf.random.uniform([], 0, max_frames + 1, dtype=tf.int32)
    return tf.concat([-tf.ones_like(x[:, :k]), x[:, : tf.shape(x)[1] - k]], axis=1), y


@augmentation("mel_roll")
def mel_roll(x: tf.Tensor, y: tf.Tensor, max_bands: int = 2):
    """A small pitch shift: roll the mel axis by up to max_bands (bands wrap around the edges)."""
    return tf.roll(x, tf.random.uniform([], -max_bands, max_bands + 1, dtype=tf.int32), axis=2), y


@augmentation("mixup")
def mixup(x: tf.Tensor, y: tf.Tensor, alpha: float = 0.2):
    g1 = tf.random.gamma([tf.shape(x)[0]], alpha)
    g2 = tf.random.gamma([tf.shape(x)[0]], alpha)
    lam = g1 / (g1 + g2)
    perm = tf.random.shuffle(tf.range(tf.shape(x)[0]))
    lx, ly = tf.reshape(lam, [-1, 1, 1, 1]), tf.reshape(lam, [-1, 1])
    return lx * x + (1 - lx) * tf.gather(x, perm), ly * y + (1 - ly) * tf.gather(y, perm)


def make_augment(names: list[str] | tuple[str, ...]):
    """A batch function applying the named augmentations (in registry order), for Dataset.map on training
    batches only."""
    unknown = set(names) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    chosen = [fn for name, fn in AUGMENTATIONS.items() if name in names]

    def augment(x, y):
        for fn in chosen:
            x, y = fn(x, y)
        return x, y

    return augment
