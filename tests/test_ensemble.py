"""An ensemble of runs: one run folder whose model averages its members' probabilities, read by every command."""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.features import FRONTEND, Frontend
from nsynth_keras.deploy.inference import load_classifier
from nsynth_keras.ensemble import main
from nsynth_keras.models.cnn import build_baseline
from nsynth_keras.models.runs import RunFolder
from nsynth_keras.reports.evaluation import evaluate


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


def test_members_of_other_frontends_one_run_and_an_existing_folder_are_refused(tmp_path, capsys):
    a, b = make_run(tmp_path / "a", 0), make_run(tmp_path / "b", 1)
    other = make_run(tmp_path / "other", 2, Frontend(f_min=300.0).to_json())
    assert main([a, other, "--out", str(tmp_path), "--run-name", "mixed"]) == 2
    assert "different frontends" in capsys.readouterr().err and not os.path.exists(tmp_path / "mixed")
    assert main([a, "--out", str(tmp_path)]) == 2
    assert "at least two" in capsys.readouterr().err
    os.makedirs(tmp_path / "kept")
    assert main([a, b, "--out", str(tmp_path), "--run-name", "kept"]) == 2
    assert "--overwrite" in capsys.readouterr().err and os.listdir(tmp_path / "kept") == []
    assert main([a, b, "--out", str(tmp_path), "--run-name", "kept", "--overwrite"]) == 0
    assert RunFolder(str(tmp_path / "kept")).is_run()
    assert main([a, str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "missing: no such run folder" in capsys.readouterr().err
