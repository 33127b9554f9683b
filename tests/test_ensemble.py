"""An ensemble of runs: one run folder whose model averages its members' probabilities, read by every command."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from nsynth_keras.data.audio import read_wav
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.features import FRONTEND, Frontend, LogMel, log_mel
from nsynth_keras.deploy.inference import load_classifier
from nsynth_keras.deploy.ondevice import check_run
from nsynth_keras.deploy.tflite import export_run
from nsynth_keras.ensemble import main
from nsynth_keras.models.cnn import build_baseline
from nsynth_keras.models.runs import RunError, RunFolder, load_keras
from nsynth_keras.reports.evaluation import delayed, evaluate, predict_split_with


def make_run(folder, seed: int, frontend: dict = FRONTEND) -> str:
    os.makedirs(folder)
    keras.utils.set_random_seed(seed)
    build_baseline().save(RunFolder(str(folder)).model)
    with open(RunFolder(str(folder)).config, "w") as f:
        json.dump({"frontend": frontend, "settings": {"seed": seed}}, f)
    return str(folder)


def test_the_ensemble_is_the_mean_of_its_members_and_evaluates_like_a_run(tmp_path, tiny_nsynth):
    runs = [make_run(tmp_path / f"seed{s}", s) for s in range(3)]
    assert main([*runs, "--out", str(tmp_path), "--run-name", "avg"]) == 0
    folder = RunFolder(str(tmp_path / "avg"))
    assert folder.is_run() and open(folder.labels).read().split() == json.load(open(folder.config))["families"]
    record = json.load(open(folder.config))
    assert [m["settings"]["seed"] for m in record["ensemble"]["members"]] == [0, 1, 2]
    x = np.random.default_rng(0).uniform(-1, 1, (5, 64, 64, 1)).astype(np.float32)
    members = [load_classifier(r).predict(x) for r in runs]
    assert not np.allclose(members[0], members[1])  # different weights: averaging them is a real test
    np.testing.assert_allclose(load_classifier(folder.path).predict(x), np.mean(members, axis=0), atol=1e-6)
    report, _ = evaluate(folder.path, DataSpec(data_dir=tiny_nsynth), "test", out=str(tmp_path / "eval"), audit=False)
    assert report["num_notes"] > 0 and report["frontend"] == {**FRONTEND, "source": report["frontend"]["source"]}


def test_members_of_different_frontends_are_joined_at_the_waveform_and_export_as_one_waveform_model(
        tmp_path, tiny_nsynth):
    log, pcen = Frontend(), Frontend(compression="pcen")
    runs = [make_run(tmp_path / "log", 0), make_run(tmp_path / "pcen", 1, pcen.to_json()),
            make_run(tmp_path / "log2", 2)]
    assert main([*runs, "--out", str(tmp_path), "--run-name", "mixed"]) == 0
    folder = str(tmp_path / "mixed")
    ensemble = load_classifier(folder)
    assert ensemble.takes_waveform and "frontend" not in json.load(open(RunFolder(folder).config))
    # the two log-mel members share one frontend layer: each frontend computed once a clip
    assert sum(isinstance(layer, LogMel) for layer in load_keras(RunFolder(folder).model).layers) == 2
    audio = os.path.join(tiny_nsynth, "nsynth-test", "audio")
    waves = np.stack([read_wav(os.path.join(audio, n)).waveform for n in sorted(os.listdir(audio))])
    expected = np.mean([load_classifier(runs[0]).predict(log_mel(waves, log).numpy()),
                        load_classifier(runs[1]).predict(log_mel(waves, pcen).numpy()),
                        load_classifier(runs[2]).predict(log_mel(waves, log).numpy())], axis=0)
    np.testing.assert_allclose(ensemble.predict(waves), expected, atol=1e-5)
    # evaluate decodes the split once and feeds every model its own input
    _, _, (together, *members), _ = predict_split_with([ensemble, *map(load_classifier, runs)],
                                                       DataSpec(data_dir=tiny_nsynth), "test")
    np.testing.assert_allclose(together, np.mean(members, axis=0), atol=1e-5)
    report, _ = evaluate(folder, DataSpec(data_dir=tiny_nsynth), "test", out=str(tmp_path / "eval"), audit=False)
    assert report["frontend"]["source"].startswith("none applied") and "compression" not in report["frontend"]
    with pytest.raises(RunError, match="exports only as the waveform variant, not fp32"):
        export_run(folder, variants=("fp32",), log=lambda *a: None)
    written = export_run(folder, log=lambda *a: None)
    assert set(written) == {"saved_model", "waveform"}
    rows = check_run(folder, DataSpec(data_dir=tiny_nsynth), "test", mediapipe=False)
    assert [r["model"] for r in rows] == ["model_waveform.tflite"] and rows[0]["agreement"] == 1.0


def test_an_onset_delay_feeds_every_model_the_delayed_notes(tmp_path, tiny_nsynth):
    frontends = [Frontend(), Frontend(compression="pcen")]
    runs = [load_classifier(make_run(tmp_path / f.compression, i, f.to_json())) for i, f in enumerate(frontends)]
    spec = DataSpec(data_dir=tiny_nsynth)
    _, _, probs, notes = predict_split_with(runs, spec, "test", onset_delay=0.1)
    audio = os.path.join(tiny_nsynth, "nsynth-test", "audio")
    waves = np.stack([read_wav(os.path.join(audio, n + ".wav")).waveform for n in notes])
    later = delayed(waves, 0.1)
    assert np.all(later[:, :1600] == 0) and np.array_equal(later[:, 1600:], waves[:, :-1600])
    for run, frontend, p in zip(runs, frontends, probs):
        np.testing.assert_allclose(p, run.predict(log_mel(later, frontend).numpy()), atol=1e-5)
    _, _, on_time, _ = predict_split_with(runs, spec, "test")
    assert not np.allclose(probs[1], on_time[1], atol=1e-4)


def test_one_run_a_missing_run_and_an_existing_folder_are_refused(tmp_path, capsys):
    a, b = make_run(tmp_path / "a", 0), make_run(tmp_path / "b", 1)
    assert main([a, "--out", str(tmp_path)]) == 2
    assert "at least two" in capsys.readouterr().err
    os.makedirs(tmp_path / "kept")
    assert main([a, b, "--out", str(tmp_path), "--run-name", "kept"]) == 2
    assert "--overwrite" in capsys.readouterr().err and os.listdir(tmp_path / "kept") == []
    assert main([a, b, "--out", str(tmp_path), "--run-name", "kept", "--overwrite"]) == 0
    assert RunFolder(str(tmp_path / "kept")).is_run()
    assert main([a, str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "missing: no such run folder" in capsys.readouterr().err
