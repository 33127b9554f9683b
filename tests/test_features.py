import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from nsynth_keras.core import config
from nsynth_keras.data.features import LogMel, log_mel


def test_tfio_native_library_loads():
    """tfio.audio.resample is a native op: it fails if libtensorflow_io.so did not load against this TF."""
    import tensorflow_io as tfio

    x = tf.sin(tf.linspace(0.0, 400.0, 16000))[:, None]
    eager = tfio.audio.resample(x, rate_in=16000, rate_out=8000)
    assert eager.shape == (8000, 1)
    in_graph = next(iter(tf.data.Dataset.from_tensors(x).map(lambda a: tfio.audio.resample(a, 16000, 8000))))
    np.testing.assert_allclose(in_graph.numpy(), eager.numpy(), atol=1e-6)


def reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """An independent float64 numpy log-mel with the frontend's documented parameters."""
    w = wave.astype(np.float64)
    n_fft, hop, n_mels, sr = config.N_FFT, config.HOP_LENGTH, config.N_MELS, config.SAMPLE_RATE
    n_frames = -(-len(w) // hop)
    padded = np.zeros((n_frames - 1) * hop + n_fft)
    padded[: len(w)] = w
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(n_frames)])
    mag = np.abs(np.fft.rfft(frames, axis=1))

    def mel(f):
        return 1127.0 * np.log1p(f / 700.0)  # HTK mel scale

    bins = mel(np.linspace(0, sr / 2, n_fft // 2 + 1))[1:]
    edges = np.linspace(mel(config.F_MIN), mel(config.F_MAX), n_mels + 2)
    lo, centre, hi = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0, np.minimum((bins[:, None] - lo) / (centre - lo), (hi - bins[:, None]) / (hi - centre)))
    weights = np.vstack([np.zeros((1, n_mels)), weights])  # the DC bin gets no weight
    power = (mag @ weights) ** 2
    db = 10 * np.log10(np.maximum(power, 1e-10)) - 10 * np.log10(max(power.max(), 1e-10))
    return np.maximum(db, -config.TOP_DB) / (config.TOP_DB / 2) + 1


def test_log_mel_matches_numpy_reference_on_real_note(real_wav):
    wave, rate = sf.read(real_wav, dtype="float32")
    assert rate == config.SAMPLE_RATE and wave.shape == (config.NUM_SAMPLES,)
    ours = log_mel(wave).numpy()
    assert ours.shape == config.INPUT_SHAPE
    # Tolerance 1e-4 in the [-1, 1] scale is 0.004 dB (float32 STFT against float64).
    np.testing.assert_allclose(ours[..., 0], reference_log_mel(wave), atol=1e-4)
    assert ours.max() == pytest.approx(1.0, abs=1e-6)
    assert ours.min() >= -1.0 - 1e-6


def test_layer_equals_function_and_batches_are_per_note(real_wav):
    wave, _ = sf.read(real_wav, dtype="float32")
    batch = np.stack([wave, 0.01 * wave, np.roll(wave, 8000)])
    by_layer = LogMel()(batch).numpy()
    by_function = np.stack([log_mel(w).numpy() for w in batch])
    np.testing.assert_allclose(by_layer, by_function, atol=1e-6)
    # Per-note normalisation: a note 40 dB quieter gives the same features.
    np.testing.assert_allclose(by_layer[1], by_layer[0], atol=1e-3)
