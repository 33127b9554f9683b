"""The log-mel frontend: one function for Dataset.map and the same code as a Keras layer."""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_io as tfio

from nsynth_keras.config import F_MAX, F_MIN, HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, TOP_DB

# Frontend parameters in one dict: recorded in every run and part of the feature-cache key.
FRONTEND = {
    "sample_rate": SAMPLE_RATE,
    "n_fft": N_FFT,
    "hop_length": HOP_LENGTH,
    "n_mels": N_MELS,
    "f_min": F_MIN,
    "f_max": F_MAX,
    "top_db": TOP_DB,
    "normalisation": "dB re the note's loudest bin, floored at -top_db, scaled to [-1, 1]",
}


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
    return (db / (TOP_DB / 2) + 1.0)[..., tf.newaxis]


@keras.saving.register_keras_serializable(package="nsynth_keras")
class LogMel(keras.layers.Layer):
    """`log_mel` as a layer, so a model can take raw 16 kHz audio [batch, 64000]."""

    def call(self, inputs):
        return log_mel(tf.cast(inputs, tf.float32))

    def compute_output_shape(self, input_shape):
        from nsynth_keras.config import INPUT_SHAPE

        return (input_shape[0], *INPUT_SHAPE)
