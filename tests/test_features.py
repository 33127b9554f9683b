import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from nsynth_keras.core import config
from nsynth_keras.data.features import (
    NORMALISATIONS,
    PCEN_ALPHA,
    PCEN_DELTA,
    PCEN_R,
    PCEN_TIME_S,
    Frontend,
    LogMel,
    log_mel,
)


def test_tfio_native_library_loads():
    """tfio.audio.resample is a native op: it fails if libtensorflow_io.so did not load against this TF."""
    import tensorflow_io as tfio

    x = tf.sin(tf.linspace(0.0, 400.0, 16000))[:, None]
    eager = tfio.audio.resample(x, rate_in=16000, rate_out=8000)
    assert eager.shape == (8000, 1)
    in_graph = next(iter(tf.data.Dataset.from_tensors(x).map(lambda a: tfio.audio.resample(a, 16000, 8000))))
    np.testing.assert_allclose(in_graph.numpy(), eager.numpy(), atol=1e-6)


def reference_mel(wave: np.ndarray) -> np.ndarray:
    """Independent float64 numpy mel magnitudes [frames, mels] with the frontend's documented parameters."""
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
    return mag @ weights


def reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """An independent float64 numpy log-mel with the frontend's documented parameters."""
    power = reference_mel(wave) ** 2
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


def reference_pcen(wave: np.ndarray) -> np.ndarray:
    """An independent float64 PCEN of the same mel magnitudes: librosa's recursion, written out as a loop."""
    mel = reference_mel(wave)
    mel = mel / mel.max()
    t_frames = PCEN_TIME_S * config.SAMPLE_RATE / config.HOP_LENGTH
    b = (np.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2)
    smooth, state = np.zeros_like(mel), mel[0]
    for t in range(len(mel)):
        state = (1 - b) * state + b * mel[t]
        smooth[t] = state
    eps = 10 ** (-config.TOP_DB / 20)
    out = (mel / (eps + smooth) ** PCEN_ALPHA + PCEN_DELTA) ** PCEN_R - PCEN_DELTA**PCEN_R
    return np.clip(2 * out, 0, 2) - 1


def test_pcen_matches_numpy_reference_is_level_free_and_recorded_by_name(real_wav):
    wave, _ = sf.read(real_wav, dtype="float32")
    frontend = Frontend(compression="pcen")
    ours = log_mel(wave, frontend).numpy()[..., 0]
    np.testing.assert_allclose(ours, reference_pcen(wave), atol=2e-3)
    assert not np.allclose(ours, log_mel(wave).numpy()[..., 0], atol=0.1)  # other features than the log-mel
    batch = np.stack([wave, 0.01 * wave])
    by_layer = LogMel(frontend.to_json())(batch).numpy()
    np.testing.assert_allclose(by_layer[0, ..., 0], ours, atol=1e-5)
    np.testing.assert_allclose(by_layer[1], by_layer[0], atol=1e-3)  # a note 40 dB quieter: the same
    assert log_mel(np.zeros_like(wave), frontend).numpy().max() == -1.0  # silence is the floor
    record = frontend.to_json()
    assert record["compression"] == "pcen" and Frontend.from_json(record) == frontend
    with pytest.raises(ValueError, match="normalisation"):
        Frontend.from_json({**record, "normalisation": NORMALISATIONS["log"]})
    with pytest.raises(ValueError, match="compression 'cqt'"):
        Frontend.from_json({**record, "compression": "cqt"})
    assert Frontend.from_json({k: v for k, v in Frontend().to_json().items() if k != "compression"}) == Frontend()
    with pytest.raises(ValueError, match="compression 'cqt'"):
        Frontend(compression="cqt")


def test_pcen_onset_gives_delayed_notes_nearly_their_features_delayed_and_pcen_does_not(data_dir):
    import glob

    from nsynth_keras.reports.evaluation import delayed

    paths = sorted(glob.glob(os.path.join(data_dir, "nsynth-train", "audio", "*.wav")))[::100]
    waves = np.stack([sf.read(p, dtype="float32")[0] for p in paths])
    later = delayed(waves, 4 * config.HOP_LENGTH / config.SAMPLE_RATE)  # four frames later
    differences = {}
    for compression in ("log", "pcen", "pcen-onset"):
        frontend = Frontend(compression=compression)
        on_time, delayed_features = (log_mel(w, frontend).numpy()[..., 0] for w in (waves, later))
        differences[compression] = np.abs(delayed_features[:, 4:] - on_time[:, :-4]).mean()
    # The log-mel is the same shifted; pcen's steady-state start hides the onset at frame 0 only (about 0.06 a
    # bin on 40 notes), pcen-onset marks it at both (about 0.025: the frames that cut the onset differ)
    assert differences["log"] < 0.02 and differences["pcen-onset"] < 0.5 * differences["pcen"]
    record = Frontend(compression="pcen-onset").to_json()
    assert "started from silence" in record["normalisation"] and Frontend.from_json(record).compression == "pcen-onset"


def test_train_records_its_frontend_and_refuses_decibel_augmentations_with_pcen(tmp_path, tiny_nsynth):
    from nsynth_keras.core.errors import SettingsError
    from nsynth_keras.data.datasets import DataSpec
    from nsynth_keras.deploy.inference import load_classifier
    from nsynth_keras.learn.training import TrainConfig, train

    with pytest.raises(SettingsError, match="--augment gain and tilt change decibels"):
        TrainConfig(frontend="pcen", augment=("tilt",)).validate()
    run = train(TrainConfig(epochs=1, frontend="pcen", out=str(tmp_path), run_name="p", tflite=False,
                            mixed_precision="off", augment=("mel_roll",)), DataSpec(data_dir=tiny_nsynth),
                log=lambda *a: None, verbose=0)
    clf = load_classifier(run)
    assert clf.frontend == Frontend(compression="pcen")
