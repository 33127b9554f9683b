"""The training building blocks: augmentations (and their registry), class weights, the cosine schedule."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from nsynth_keras.core.config import NUM_CLASSES, TOP_DB
from nsynth_keras.core.errors import DataError
from nsynth_keras.data import features
from nsynth_keras.data.features import AUGMENTATIONS, make_augment
from nsynth_keras.learn.training import TrainConfig, balanced_class_weight, learning_rate


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (8, 64, 64, 1)).astype(np.float32))
    y = tf.one_hot(np.arange(8) % NUM_CLASSES, NUM_CLASSES)
    return x, y


def test_each_augmentation_changes_notes_as_it_says(batch):
    x, y = batch
    tf.random.set_seed(1)
    for name, fn in AUGMENTATIONS.items():
        ax, ay = fn(x, y)
        assert ax.shape == x.shape and ay.shape == y.shape, name
        assert float(tf.reduce_min(ax)) >= -1.0 and float(tf.reduce_max(ax)) <= 1.0, name
    masked, _ = features.spec_augment(x, y)
    assert float(tf.reduce_mean(tf.cast(masked == 0.0, tf.float32))) > 0.01  # masked bins are filled with 0
    gained, _ = features.gain(x, y)
    offset = (gained - x).numpy()
    inside = np.abs(x.numpy()) < 0.8  # away from the clip at +-1, a note moves by one offset
    per_note = [np.ptp(offset[i][inside[i]]) for i in range(len(x))]
    assert max(per_note) < 1e-5 and np.abs(offset).max() <= 6 / (TOP_DB / 2) + 1e-6
    shifted, _ = features.shift(x, y, max_frames=6)
    k = int(np.argmax(np.any(shifted.numpy() != -1.0, axis=(0, 2, 3))))
    np.testing.assert_array_equal(shifted.numpy()[:, k:], x.numpy()[:, : 64 - k])
    rolled, _ = features.mel_roll(x, y)
    assert any(np.array_equal(rolled.numpy(), np.roll(x.numpy(), r, axis=2)) for r in range(-2, 3))
    tilted, _ = features.tilt(x, y)
    assert np.allclose(tilted.numpy().max(axis=(1, 2, 3)), 1.0)  # each note's peak is 0 dB again
    mixed_x, mixed_y = features.mixup(x, y)
    np.testing.assert_allclose(tf.reduce_sum(mixed_y, 1).numpy(), 1.0, atol=1e-6)


def test_make_augment_applies_the_registry_in_order_and_a_new_one_is_one_function(batch):
    x, y = batch
    calls = []

    @features.augmentation("negate")
    def negate(x, y):
        calls.append("negate")
        return -x, y

    try:
        out, _ = make_augment(["negate"])(x, y)
        np.testing.assert_array_equal(out.numpy(), -x.numpy())
        assert calls == ["negate"]
        with pytest.raises(ValueError, match="unknown augmentation"):
            make_augment(["nope"])
    finally:
        del AUGMENTATIONS["negate"]
    assert list(AUGMENTATIONS) == ["specaugment", "gain", "shift", "mel_roll", "tilt", "mixup"]


def test_balanced_class_weights_and_missing_families():
    weights = balanced_class_weight([0, 0, 0, 1])
    assert weights[0] == pytest.approx(4 / (2 * 3)) and weights[1] == pytest.approx(4 / (2 * 1))
    assert all(weights[i] == 0.0 for i in range(2, NUM_CLASSES))
    with pytest.raises(DataError, match="needs the family of every training note"):
        balanced_class_weight(None)


def test_cosine_schedule_decays_to_zero_over_every_step():
    assert learning_rate(TrainConfig(learning_rate=3e-3), 100, 32) == 3e-3
    schedule = learning_rate(TrainConfig(learning_rate=3e-3, lr_schedule="cosine", epochs=5), 100, 32)
    steps = 5 * 4  # ceil(100 / 32) steps an epoch
    assert float(schedule(0)) == pytest.approx(3e-3)
    assert float(schedule(steps // 2)) == pytest.approx(1.5e-3, rel=1e-3)
    assert float(schedule(steps)) == pytest.approx(0.0, abs=1e-9)


def test_the_recording_chain_colours_a_note_and_each_epoch_draws_anew(tiny_nsynth):
    from nsynth_keras.core.config import NUM_SAMPLES, SAMPLE_RATE
    from nsynth_keras.data.datasets import DataSpec
    from nsynth_keras.data.features import log_mel, make_wave_augment, recording_chain
    from nsynth_keras.data.pipeline import split_features

    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
    note = tf.constant((0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t)).astype(np.float32))
    tf.random.set_seed(3)
    out = recording_chain(note)
    assert out.shape == note.shape and bool(tf.reduce_all(tf.math.is_finite(out)))
    # Reverb lengthens the decay: the last second keeps more energy than the dry note's.
    tail = slice(3 * SAMPLE_RATE, None)
    rms = [float(tf.sqrt(tf.reduce_mean(w[tail] ** 2)) / tf.sqrt(tf.reduce_mean(w**2))) for w in (note, out)]
    assert rms[1] > rms[0]
    mels = log_mel(tf.stack([note, out])).numpy()
    assert 0.3 < np.corrcoef(mels[0].ravel(), mels[1].ravel())[0, 1] < 0.99  # the same note, recorded otherwise
    assert make_wave_augment(0.0)({"audio": note})["audio"] is note or np.array_equal(
        make_wave_augment(0.0)({"audio": note})["audio"].numpy(), note.numpy())
    ds, _ = split_features(DataSpec(data_dir=tiny_nsynth), "train", 6, training=True,
                           wave_augment=make_wave_augment(1.0))
    first, second = (next(iter(ds))[0].numpy() for _ in range(2))
    assert first.shape == (6, 64, 64, 1) and not np.allclose(np.sort(first.ravel()), np.sort(second.ravel()))


def test_an_onset_delay_moves_the_note_later_on_about_half_the_notes():
    from nsynth_keras.core.config import NUM_SAMPLES, SAMPLE_RATE
    from nsynth_keras.data.features import ONSET_DELAY_SHARE, delay_onset, make_wave_augment

    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
    note = tf.constant((0.5 * np.cos(2 * np.pi * 440 * t) * np.exp(-3 * t)).astype(np.float32))
    tf.random.set_seed(5)
    delays = []
    for _ in range(20):
        out = delay_onset(note, 0.25).numpy()
        k = int(np.argmax(out != 0))  # the note starts at full amplitude: its first sample is not 0
        assert out.shape == note.shape and np.all(out[:k] == 0)
        np.testing.assert_array_equal(out[k:], note.numpy()[: NUM_SAMPLES - k])
        delays.append(k)
    assert max(delays) <= 0.25 * SAMPLE_RATE and len(set(delays)) > 10  # a new draw each time
    augment = make_wave_augment(0.0, onset_delay=0.25)
    moved = [augment({"audio": note})["audio"].numpy()[0] == 0 for _ in range(200)]
    assert abs(np.mean(moved) - ONSET_DELAY_SHARE) < 0.12


def test_checking_a_config_runs_no_tensorflow_op():
    """A multi-worker strategy must configure TF's collectives before any op: validate() builds nothing."""
    code = ("from nsynth_keras.learn.training import TrainConfig\n"
            "TrainConfig().validate(); TrainConfig(model='cnn', filters=(8, 16)).validate()\n"
            "from tensorflow.python.eager import context\n"
            "print('TF context initialised:', context.context()._initialized)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert "TF context initialised: False" in out.stdout, out.stdout[-500:] + out.stderr[-1500:]


def test_tilt_is_one_slope_per_note_over_octaves_and_keeps_the_floor():
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.3, 0.3, (4, 64, 64, 1)).astype(np.float32)
    x[:, :, :, 0][:, :, 60:] = -1.0  # the top bands at the floor (silent)
    x[:, 10, 30, 0] = 1.0  # each note's peak
    tf.random.set_seed(3)
    tilted, _ = features.tilt(tf.constant(x), tf.zeros([4, NUM_CLASSES]), max_db_per_octave=4.0)
    tilted = tilted.numpy()
    assert np.all(tilted[:, :, 60:] == -1.0)  # silent bins stay silent
    octaves = features._mel_octaves().numpy()
    assert octaves[0] < -4 and 2.5 < octaves[-1] < 3.1 and np.all(np.diff(octaves) > 0)
    slopes = []
    for note in range(4):
        diff = (tilted[note, :, :60, 0] - x[note, :, :60, 0]) * (TOP_DB / 2)  # dB added to each bin
        # one straight line over octaves, the same in every frame: dB = slope * octave + offset
        slope, offset = np.polyfit(octaves[:60], diff.mean(axis=0), 1)
        np.testing.assert_allclose(diff, np.broadcast_to(slope * octaves[:60] + offset, diff.shape), atol=1e-3)
        slopes.append(slope)
    assert all(abs(s) <= 4.0 for s in slopes) and np.ptp(slopes) > 0.5  # a draw per note, within the bound


def test_ema_validates_and_keeps_the_weights_moving_average(tmp_path):
    """--ema: every epoch is scored, chosen and kept by the weights' moving average. With a momentum near 1 over a
    few steps that average stays near the weights after the first step (Keras starts it there), while the last step's
    weights have moved on."""
    import keras

    from nsynth_keras.learn.objective import compile_model
    from nsynth_keras.learn.training import fit_callbacks
    from nsynth_keras.models.runs import RunFolder

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = keras.utils.to_categorical(np.arange(64) % NUM_CLASSES, NUM_CLASSES)

    def moved(ema: float) -> float:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES, activation="softmax")])
        start = model.get_weights()[0].copy()
        compile_model(model, 0.05, steps_per_execution=1, ema=ema)
        folder = RunFolder(str(tmp_path / f"ema{ema}"))
        os.makedirs(folder.path)
        callbacks = fit_callbacks(folder, "r", False, patience=0, ema=ema > 0)
        kinds = [type(c).__name__ for c in callbacks]
        assert ("SwapEMAWeights" in kinds) == (ema > 0)
        assert kinds.index("SwapEMAWeights" if ema else "StopOnNonFinite") < kinds.index("KeepBest")
        model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=4, verbose=0, callbacks=callbacks)
        model.load_weights(folder.best_weights)
        return float(np.abs(model.get_weights()[0] - start).mean())

    assert moved(0.999) < 0.25 * moved(0.0)  # measured 0.052 against 0.311
