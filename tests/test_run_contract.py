"""The run contract: a run records its frontend, and every reader (predict, evaluate, the waveform export, the
on-device check) feeds the model the features it records; an old run without the record gets the default, said so."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nsynth_keras.data.audio import read_wav
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.features import DEFAULT_FRONTEND, FRONTEND, Frontend, log_mel
from nsynth_keras.deploy.inference import TFLiteClassifier, load_classifier
from nsynth_keras.deploy.ondevice import check_run
from nsynth_keras.deploy.prediction import classify_files
from nsynth_keras.deploy.tflite import export_run
from nsynth_keras.models.cnn import build_baseline
from nsynth_keras.models.runs import RunError, RunFolder
from nsynth_keras.reports.evaluation import evaluate

OTHER = Frontend(hop_length=1001, f_min=300.0)  # still 64 frames x 64 mels: the same model input


def make_run(folder, frontend: dict | None) -> tuple[str, object]:
    os.makedirs(folder, exist_ok=True)
    model = build_baseline()
    model.save(RunFolder(str(folder)).model)
    with open(RunFolder(str(folder)).config, "w") as f:
        json.dump({"frontend": frontend} if frontend is not None else {"settings": {}}, f)
    return str(folder), model


def test_predict_and_evaluate_feed_a_run_its_recorded_frontend(tmp_path, tiny_nsynth):
    run, model = make_run(tmp_path / "other", OTHER.to_json())
    wav = os.path.join(tiny_nsynth, "nsynth-test", "audio", sorted(os.listdir(
        os.path.join(tiny_nsynth, "nsynth-test", "audio")))[0])
    wave = read_wav(wav).waveform[None]
    expected = model.predict(log_mel(wave, OTHER).numpy(), verbose=0)[0]
    default = model.predict(log_mel(wave).numpy(), verbose=0)[0]
    assert not np.allclose(expected, default, atol=1e-5)  # the frontend matters for this model
    clf = load_classifier(run)
    assert clf.frontend == OTHER and "recorded" in clf.frontend_source
    results, _ = classify_files(clf, [wav], k=11)
    got = {t["family"]: t["probability"] for t in results[0]["top"]}
    from nsynth_keras.core.config import FAMILIES

    assert np.allclose([got[f] for f in FAMILIES], expected, atol=1e-5)
    r, _ = evaluate(run, DataSpec(data_dir=tiny_nsynth), "test", out=str(tmp_path / "eval"), audit=False)
    assert r["frontend"]["f_min"] == 300.0 and r["frontend"]["hop_length"] == 1001


@pytest.mark.parametrize("frontend", [OTHER, Frontend(compression="pcen")], ids=["other-mels", "pcen"])
def test_the_waveform_export_and_the_on_device_check_use_the_run_frontend(tmp_path, tiny_nsynth, frontend):
    run, model = make_run(tmp_path / "other", frontend.to_json())
    export_run(run, variants=("waveform", "fp32"), log=lambda *a: None)
    waves = np.stack([read_wav(os.path.join(tiny_nsynth, "nsynth-test", "audio", n)).waveform
                      for n in sorted(os.listdir(os.path.join(tiny_nsynth, "nsynth-test", "audio")))])
    lite = TFLiteClassifier(os.path.join(run, "model_waveform.tflite")).predict(waves)
    assert np.abs(lite - model.predict(log_mel(waves, frontend).numpy(), verbose=0)).max() < 1e-3
    rows = {r["model"]: r for r in check_run(run, DataSpec(data_dir=tiny_nsynth), "test", mediapipe=False)}
    assert rows["model_waveform.tflite"]["agreement"] == 1.0 and rows["model.tflite"]["agreement"] == 1.0


def test_an_old_run_gets_the_default_and_an_unknown_frontend_is_refused(tmp_path):
    run, _ = make_run(tmp_path / "old", None)
    clf = load_classifier(run)
    assert clf.frontend == DEFAULT_FRONTEND and "records none" in clf.frontend_source
    assert FRONTEND == DEFAULT_FRONTEND.to_json()
    bad, _ = make_run(tmp_path / "bad", {**FRONTEND, "normalisation": "per-channel energy normalisation"})
    with pytest.raises(RunError, match="cannot feed this model: .*normalisation 'per-channel energy"):
        load_classifier(bad)
    rate, _ = make_run(tmp_path / "rate", {**FRONTEND, "sample_rate": 22050})
    with pytest.raises(RunError, match="22050 Hz; this code reads notes as 4 s at 16000 Hz"):
        load_classifier(rate)
