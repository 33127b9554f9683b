import os

import keras
import numpy as np
import pytest

from nsynth_keras import export, tflite, tflite_check
from nsynth_keras.data import DataSpec, Filters
from nsynth_keras.features import log_mel
from nsynth_keras.inference import TFLiteClassifier
from nsynth_keras.pipeline import load_split
from nsynth_keras.runs import load_keras


@pytest.fixture(scope="module")
def exported_run(trained_run, data_dir):
    assert export.main([trained_run, "--data-dir", data_dir]) == 0
    return trained_run


def test_every_format_is_written_with_labels(exported_run):
    names = set(os.listdir(exported_run))
    assert set(tflite.VARIANTS.values()) <= names and "saved_model" in names and "labels.txt" in names
    for variant, name in tflite.VARIANTS.items():
        path = os.path.join(exported_run, name)
        assert tflite.read_labels(path)[0] == "bass" and len(tflite.read_labels(path)) == 11
        clf = TFLiteClassifier(path)  # loads in the LiteRT interpreter
        assert clf.takes_waveform == (variant == "waveform")
        assert clf.input["dtype"] == np.float32 and clf.output["dtype"] == np.float32
    assert not [n for n in names if n.endswith(".tmp")]


def test_waveform_model_equals_frontend_plus_model_on_real_notes(exported_run, data_dir):
    waves = load_split(DataSpec(data_dir=data_dir, filters=Filters(max_examples=8)), "test", ("audio",))["audio"]
    two_step = load_keras(os.path.join(exported_run, "model.keras"))(log_mel(waves)).numpy()
    one_step = TFLiteClassifier(os.path.join(exported_run, "model_waveform.tflite")).predict(waves)
    np.testing.assert_allclose(one_step, two_step, atol=1e-4)
    assert np.all(np.isfinite(one_step))


def test_tflite_check_meets_thresholds_on_real_notes(exported_run, data_dir, capsys):
    rc = tflite_check.main([exported_run, "--data-dir", data_dir, "--split", "valid"])
    out = capsys.readouterr().out
    assert "model_int8.tflite" in out and "model_waveform.tflite" in out
    assert rc == 0, out


def test_tflite_check_errors(tmp_path, data_dir, capsys):
    assert tflite_check.main([str(tmp_path), "--data-dir", data_dir]) == 2
    assert "no model.keras" in capsys.readouterr().err


def test_mixed_precision_trains_and_exports_a_float32_model(data_dir):
    """A mixed-precision model after a few real steps, and its float32 export on the same weights."""
    from nsynth_keras.model import build_cnn
    from nsynth_keras.pipeline import split_features
    from nsynth_keras.training import compile_model, float32_copy, one_hot

    kwargs = {"filters": (16, 32, 64, 128)}
    ds, _ = split_features(DataSpec(data_dir=data_dir, filters=Filters(max_examples=64)), "train", 16,
                           training=True)
    try:
        for policy, atol in (("mixed_float16", 2e-2), ("mixed_bfloat16", 5e-2)):
            keras.mixed_precision.set_global_policy(policy)
            mixed = build_cnn(**kwargs)
            compile_model(mixed, 1e-3)
            history = mixed.fit(ds.map(one_hot), epochs=2, verbose=0)
            assert np.isfinite(history.history["loss"]).all()
            assert mixed.layers[0].compute_dtype != "float32" and mixed.layers[-1].compute_dtype == "float32"
            export_model = float32_copy(mixed, kwargs)
            assert all(layer.compute_dtype == "float32" for layer in export_model.layers)
            x = next(iter(ds))[0].numpy()
            ours, theirs = export_model(x).numpy(), mixed(x).numpy()
            assert ours.dtype == np.float32
            np.testing.assert_allclose(ours, theirs, atol=atol)
            lite = tflite.to_tflite(export_model, "fp32")
            assert len(lite) > 100_000
    finally:
        keras.mixed_precision.set_global_policy("float32")
