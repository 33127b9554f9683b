"""The log-mel frontend: one function for Dataset.map and the same code as a Keras layer."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
import tensorflow_io as tfio

from nsynth_keras.core.config import (
    CLIP_SECONDS,
    F_MAX,
    F_MIN,
    HOP_LENGTH,
    INPUT_SHAPE,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    TOP_DB,
)

# compression -> what the features are, as recorded; a record whose text differs is refused (other constants).
NORMALISATIONS = {
    "log": "dB re the note's loudest bin, floored at -top_db, scaled to [-1, 1]; silence -> -1",
    "pcen": "PCEN of the mel magnitudes re the note's loudest bin (time constant 0.4 s, alpha 0.98, delta 2, r 0.5, "
            "eps 10^(-top_db/20)), doubled, clipped to [0, 2], minus 1; silence -> -1",
    "pcen-onset": "PCEN as pcen, its smoother started from silence instead of the first frame, so a note's onset "
                  "is marked wherever it falls; silence -> -1",
}
# librosa's defaults; a 1.5 s or 0.1 s time constant and alpha 0.8 scored no better on valid novel (README)
PCEN_TIME_S, PCEN_ALPHA, PCEN_DELTA, PCEN_R = 0.4, 0.98, 2.0, 0.5
PCEN_COMPRESSIONS = ("pcen", "pcen-onset")


@dataclass(frozen=True)
class Frontend:
    """The log-mel frontend's settings: recorded in every run (config.json "frontend"), part of the feature-cache
    key, and read back by everything that feeds a run's model (evaluate, predict, the export, the on-device check),
    so a run is always fed the features it was trained on."""

    sample_rate: int = SAMPLE_RATE
    clip_seconds: float = CLIP_SECONDS
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS
    f_min: float = F_MIN
    f_max: float = F_MAX
    top_db: float = TOP_DB
    # log: the homework's log-mel; pcen: per-channel energy normalisation of the same mels (an automatic gain per
    # mel band that follows its recent level, so a fixed EQ or room colour matters less); pcen-onset: the same, with
    # the same features for a note and the note delayed (pcen's steady-state start hides an onset at frame 0 only)
    compression: str = "log"

    def __post_init__(self):
        if self.compression not in NORMALISATIONS:
            raise ValueError(f"compression {self.compression!r} is not one this code computes "
                             f"({', '.join(NORMALISATIONS)})")

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "normalisation": NORMALISATIONS[self.compression]}

    @classmethod
    def from_json(cls, record: dict, where: str = "frontend") -> Frontend:
        """A recorded frontend; one this code cannot compute (another normalisation or sample rate, unknown keys)
        is refused, naming what differs."""
        record = dict(record)
        normalisation = record.pop("normalisation", None)
        unknown = sorted(set(record) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown settings {', '.join(unknown)}")
        try:
            frontend = cls(**record)  # refuses a compression this code cannot compute
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        expected = NORMALISATIONS[frontend.compression]
        if normalisation not in (None, expected):
            raise ValueError(f"{where}: normalisation {normalisation!r} is not the one this code computes "
                             f"({expected!r})")
        if frontend.sample_rate != SAMPLE_RATE or frontend.clip_seconds != CLIP_SECONDS:
            raise ValueError(f"{where}: {frontend.clip_seconds} s at {frontend.sample_rate} Hz; this code reads "
                             f"notes as {CLIP_SECONDS} s at {SAMPLE_RATE} Hz")
        if not 0 <= frontend.f_min < frontend.f_max <= frontend.sample_rate / 2 or frontend.hop_length < 1:
            raise ValueError(f"{where}: f_min {frontend.f_min}, f_max {frontend.f_max}, hop {frontend.hop_length} "
                             "are not a usable frontend")
        return frontend


DEFAULT_FRONTEND = Frontend()
FRONTEND = DEFAULT_FRONTEND.to_json()  # the default, as recorded in runs and cache keys


SILENCE = 1e-5  # mel magnitude; its power is dbscale's amin (1e-10)


def _note_peak(power: tf.Tensor) -> tf.Tensor:
    return tf.reduce_max(power, axis=[-2, -1], keepdims=True)


def log_mel(waveform: tf.Tensor, frontend: Frontend = DEFAULT_FRONTEND) -> tf.Tensor:
    """Waveform [..., 64000] -> the frontend's features [..., 64 frames, 64 mels, 1] in [-1, 1]: the log-mel
    (or, with compression "pcen" or "pcen-onset", the PCEN mel) of one note or a batch.

    Per-note normalisation: dB relative to the note's own loudest mel bin (so the
    velocity and recording level do not matter), floored at -top_db, then scaled to
    [-1, 1].
    """
    f = frontend
    spec = tfio.audio.spectrogram(waveform, nfft=f.n_fft, window=f.n_fft, stride=f.hop_length)
    mel = tfio.audio.melscale(spec, rate=f.sample_rate, mels=f.n_mels, fmin=f.f_min, fmax=f.f_max)
    if f.compression in PCEN_COMPRESSIONS:
        features = pcen(mel / tf.maximum(_note_peak(mel), SILENCE), f) - 1.0
    else:
        # ref is per note, so each note's maximum is 0 dB and the top_db floor is per note too.
        db = tfio.audio.dbscale(mel, top_db=f.top_db, ref=_note_peak)
        features = db / (f.top_db / 2) + 1.0
    # A silent note has no peak to refer to: give it the floor (-1), not a flat 0 dB.
    silent = tf.reduce_max(mel, axis=[-2, -1], keepdims=True) <= SILENCE
    return tf.where(silent, -1.0, features)[..., tf.newaxis]


def pcen_smoother(frames: int, frontend: Frontend = DEFAULT_FRONTEND) -> tf.Tensor:
    """PCEN's first-order smoother over time as a [frames, frames] matrix (frame t <- frames 0..t), started as if
    the first frame had always sounded (librosa's steady-state start) or, for pcen-onset, from silence; a matrix
    keeps it one op in TFLite."""
    t_frames = PCEN_TIME_S * frontend.sample_rate / frontend.hop_length
    b = (math.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2)  # librosa.pcen's b for this time constant
    t = np.arange(frames)
    weights = np.where(t[:, None] >= t[None, :], b * (1 - b) ** np.maximum(t[:, None] - t[None, :], 0), 0.0)
    if frontend.compression != "pcen-onset":
        weights[:, 0] += (1 - b) ** (t + 1)
    return tf.constant(weights, tf.float32)


def pcen(mel: tf.Tensor, frontend: Frontend = DEFAULT_FRONTEND) -> tf.Tensor:
    """Per-channel energy normalisation (Wang et al. 2017) of mel magnitudes [..., frames, mels] re the note's peak:
    (E / (eps + M)^alpha + delta)^r - delta^r, M the smoothed E of each band; doubled (a steady band sits near
    0.6, an onset up to about 2.5) and clipped to [0, 2]."""
    smooth = tf.einsum("tk,...km->...tm", pcen_smoother(mel.shape[-2], frontend), mel)
    eps = 10.0 ** (-frontend.top_db / 20)
    out = (mel / tf.pow(eps + smooth, PCEN_ALPHA) + PCEN_DELTA) ** PCEN_R - PCEN_DELTA**PCEN_R
    return tf.clip_by_value(2.0 * out, 0.0, 2.0)


def mel_band_hz(frontend: Frontend = DEFAULT_FRONTEND) -> np.ndarray:
    """Centre frequency of each mel band (HTK mel scale, as tfio.audio.melscale builds it)."""
    f = frontend
    mel = np.linspace(2595 * np.log10(1 + f.f_min / 700), 2595 * np.log10(1 + f.f_max / 700), f.n_mels + 2)[1:-1]
    return 700 * (10 ** (mel / 2595) - 1)


@keras.saving.register_keras_serializable(package="nsynth_keras")
class LogMel(keras.layers.Layer):
    """`log_mel` as a layer, so a model can take raw 16 kHz audio [batch, 64000]; its frontend is part of its
    config, so a saved waveform model keeps the features its classifier was trained on."""

    def __init__(self, frontend: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.frontend = Frontend.from_json(frontend) if frontend else DEFAULT_FRONTEND

    def call(self, inputs):
        return log_mel(tf.cast(inputs, tf.float32), self.frontend)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *INPUT_SHAPE)

    def get_config(self):
        return {**super().get_config(), "frontend": self.frontend.to_json()}


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


def _mel_octaves(frontend: Frontend = DEFAULT_FRONTEND) -> tf.Tensor:
    """Each mel band's centre as octaves re 1 kHz."""
    return tf.constant(np.log2(np.maximum(mel_band_hz(frontend), 20.0) / 1000.0), tf.float32)


@augmentation("tilt")
def tilt(x: tf.Tensor, y: tf.Tensor, max_db_per_octave: float = 4.0):
    """A random spectral tilt around 1 kHz, as a softer or harder stroke (or a darker or brighter microphone)
    changes an instrument: bins above the floor get +-max_db_per_octave per octave, then the note's peak is
    0 dB again, as the frontend has it; bins pushed below -top_db join the floor."""
    slope = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], -max_db_per_octave, max_db_per_octave)
    tilted = x + slope * tf.reshape(_mel_octaves(), [1, 1, -1, 1]) / (TOP_DB / 2)
    tilted -= tf.reduce_max(tilted, axis=[1, 2, 3], keepdims=True) - 1.0
    return tf.where(x <= -1.0, x, tf.maximum(tilted, -1.0)), y


@augmentation("mixup")
def mixup(x: tf.Tensor, y: tf.Tensor, alpha: float = 0.2):
    g1 = tf.random.gamma([tf.shape(x)[0]], alpha)
    g2 = tf.random.gamma([tf.shape(x)[0]], alpha)
    lam = g1 / (g1 + g2)
    perm = tf.random.shuffle(tf.range(tf.shape(x)[0]))
    lx, ly = tf.reshape(lam, [-1, 1, 1, 1]), tf.reshape(lam, [-1, 1])
    return lx * x + (1 - lx) * tf.gather(x, perm), ly * y + (1 - ly) * tf.gather(y, perm)


DB_AUGMENTATIONS = ("gain", "tilt")  # they add decibels: for the log frontend only


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


# --------------------------------------------------------------------------- recording chain
# A training-only waveform augmentation (before the frontend): the same instrument as if recorded through
# another microphone, room and preamp, so a model learns the instrument rather than one recording of it.

CHAIN_FFT = 2**17  # >= one note plus the longest room response: linear (not circular) convolution
MAX_RT60_S = 1.5


def _eq_gain_db(n_bins: int) -> tf.Tensor:
    """A random smooth EQ curve in dB over rfft bins: a spectral tilt, three peaking bands of +-9 dB and, now and
    then, a low-pass (2-8 kHz) or a high-pass (40-300 Hz) at 12 dB per octave."""
    freq = tf.maximum(tf.linspace(0.0, SAMPLE_RATE / 2, n_bins), 20.0)
    octave = tf.math.log(freq / 1000.0) / tf.math.log(2.0)
    gain = tf.random.uniform([], -3.0, 3.0) * octave  # dB per octave around 1 kHz
    centres = tf.random.uniform([3], tf.math.log(100.0 / 1000) / tf.math.log(2.0), tf.math.log(6.0) / tf.math.log(2.0))
    widths = tf.random.uniform([3], 0.3, 1.5)
    peaks = tf.random.uniform([3], -9.0, 9.0)
    gain += tf.reduce_sum(peaks[:, None] * tf.exp(-0.5 * ((octave[None, :] - centres[:, None]) / widths[:, None]) ** 2),
                          axis=0)
    low_pass = tf.math.log(tf.random.uniform([], 2000.0, 8000.0) / 1000.0) / tf.math.log(2.0)
    high_pass = tf.math.log(tf.random.uniform([], 40.0, 300.0) / 1000.0) / tf.math.log(2.0)
    gain -= tf.cast(tf.random.uniform([]) < 0.3, tf.float32) * 12.0 * tf.nn.relu(octave - low_pass)
    gain -= tf.cast(tf.random.uniform([]) < 0.3, tf.float32) * 12.0 * tf.nn.relu(high_pass - octave)
    return gain


def _room_response() -> tf.Tensor:
    """A synthetic room impulse response: the direct sound, then exponentially decaying noise (RT60 0.2-1.5 s)."""
    length = int(MAX_RT60_S * SAMPLE_RATE)
    t = tf.range(length, dtype=tf.float32) / SAMPLE_RATE
    rt60 = tf.random.uniform([], 0.2, MAX_RT60_S)
    tail = tf.random.normal([length]) * tf.exp(-6.91 * t / rt60)
    tail /= tf.norm(tail) + 1e-9
    return tf.concat([[1.0], tf.zeros([int(0.005 * SAMPLE_RATE)]), tail[: length - 1 - int(0.005 * SAMPLE_RATE)]], 0)


def recording_chain(wave: tf.Tensor) -> tf.Tensor:
    """One note [64000] through a random EQ and room (wet share 0-50%), then noise at 30-50 dB SNR. EQ and room
    are linear filters, so they are one product of spectra (three FFTs a note)."""
    n = tf.shape(wave)[0]
    eq = tf.cast(tf.pow(10.0, _eq_gain_db(CHAIN_FFT // 2 + 1) / 20.0), tf.complex64)
    share = tf.random.uniform([], 0.0, 0.5)
    room = tf.signal.rfft(_room_response(), [CHAIN_FFT]) / tf.cast(tf.sqrt(2.0), tf.complex64)  # direct + tail: 2
    response = eq * (tf.cast(1 - share, tf.complex64) + tf.cast(share, tf.complex64) * room)
    out = tf.signal.irfft(tf.signal.rfft(wave, [CHAIN_FFT]) * response, [CHAIN_FFT])[:n]
    rms = tf.sqrt(tf.reduce_mean(out**2) + 1e-12)
    snr_db = tf.random.uniform([], 30.0, 50.0)
    out += tf.random.normal(tf.shape(out)) * rms * tf.pow(10.0, -snr_db / 20.0)
    return tf.ensure_shape(out, wave.shape)


ONSET_DELAY_SHARE = 0.5  # of the training notes; the rest keep the onset at frame 0, as every NSynth note has it


def delay_onset(wave: tf.Tensor, max_seconds: float) -> tf.Tensor:
    """One note [64000] moved later by a random 0..max_seconds: silence in front, its end cut, as a recording that
    does not start at the note's onset."""
    n = tf.shape(wave)[0]
    k = tf.random.uniform([], 0, int(max_seconds * SAMPLE_RATE) + 1, dtype=tf.int32)
    return tf.ensure_shape(tf.concat([tf.zeros([k], wave.dtype), wave[: n - k]], 0), wave.shape)


def make_wave_augment(probability: float, onset_delay: float = 0.0) -> Callable[[dict], dict]:
    """A note-element function (Dataset.map, training notes only): a random onset delay of up to ``onset_delay``
    seconds on ONSET_DELAY_SHARE of the notes, then the recording chain with this probability (so the chain's
    noise and room fill the delay, as in a recording)."""
    def augment(note: dict) -> dict:
        wave = note["audio"]
        if onset_delay:
            wave = tf.cond(tf.random.uniform([]) < ONSET_DELAY_SHARE, lambda: delay_onset(wave, onset_delay),
                           lambda: wave)
        if probability:
            wave = tf.cond(tf.random.uniform([]) < probability, lambda: recording_chain(wave), lambda: wave)
        return {**note, "audio": wave}

    return augment
