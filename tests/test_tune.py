import csv
import json
import os
import re
import subprocess
import sys

import keras_tuner as kt
import pytest

from nsynth_keras import tune
from nsynth_keras.learn import tuning
from tests.conftest import free_port

TINY = ["--max-examples", "60", "--epochs", "1", "--batch-size", "16"]


def test_impossible_configurations_fail_without_training():
    hp = kt.HyperParameters()
    hp.Fixed("strides", 2)
    hp.Fixed("padding", "valid")
    hp.Fixed("blocks", 4)
    with pytest.raises(kt.errors.FailedTrialError, match="skipped: configuration .*strides=2"):
        tuning.CNNHyperModel().build(hp)
    model = tuning.CNNHyperModel().build(kt.HyperParameters())  # defaults: the homework network
    assert model.count_params() == 119691


@pytest.mark.slow
def test_search_resume_summary_and_export_best(data_dir, tmp_path, capsys):
    project = str(tmp_path / "tuning" / "demo")
    args = ["--data-dir", data_dir, "--project", project, "--algorithm", "random", "--pitch-max", "80", *TINY]
    assert tune.main([*args, "--max-trials", "2"]) == 0
    first = sorted(n for n in os.listdir(project) if n.startswith("trial_"))
    assert len(first) == 2
    # The same command with a bigger budget continues the search instead of starting over.
    assert tune.main([*args, "--max-trials", "3"]) == 0
    assert "Resuming the search" in capsys.readouterr().out
    assert len([n for n in os.listdir(project) if n.startswith("trial_")]) == 3
    assert tune.main(["--project", project, "--summary"]) == 0
    out = capsys.readouterr().out
    completed, skipped = map(int, re.search(r"(\d+) trials completed, (\d+) failed", out).groups())
    assert completed + skipped == 3 and completed >= 1
    rows = list(csv.DictReader(open(os.path.join(project, "summary.csv"))))
    assert len(rows) == 3 and all(r["padding"] in ("same", "valid") for r in rows)
    assert os.path.getsize(os.path.join(project, "summary.png")) > 5_000
    runs = tmp_path / "runs"
    # Only --epochs is given: the data filters and batch size come from the search's record.
    assert tune.main(["--project", project, "--export-best", "--out", str(runs), "--epochs", "1"]) == 0
    run = runs / "tuned-demo"
    assert {"model.keras", "saved_model", "model.tflite", "config.json"} <= set(os.listdir(run))
    cfg = json.load(open(run / "config.json"))
    assert cfg["data"]["pitch_max"] == 80 and cfg["data"]["max_examples"] == 60
    assert cfg["data"]["data_dir"] == os.path.abspath(data_dir)
    assert cfg["settings"]["batch_size"] == 16 and cfg["settings"]["epochs"] == 1
    assert cfg["settings"]["origin"]["from_command_line"] == ["epochs"]
    assert "batch_size" in cfg["settings"]["origin"]["from_search"]
    # A flag given now wins over the record, and config.json says so.
    assert tune.main(["--project", project, "--export-best", "--out", str(runs), "--epochs", "1", "--pitch-max", "70",
                      "--overwrite"]) == 0
    cfg = json.load(open(run / "config.json"))
    assert cfg["data"]["pitch_max"] == 70 and cfg["data"]["max_examples"] == 60
    assert cfg["settings"]["origin"]["from_command_line"] == ["epochs", "pitch_max"]


@pytest.mark.slow  # several processes: run by .ci/run (python -m pytest -m slow)
def test_distributed_chief_and_two_workers_share_trials(data_dir, tmp_path):
    project = str(tmp_path / "dist")
    cmd = [sys.executable, "-m", "nsynth_keras.tune", "--data-dir", data_dir, "--project", project,
           "--algorithm", "random", "--max-trials", "4", *TINY]
    env = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(free_port()),
               PYTHONUNBUFFERED="1", CI="1")
    procs = {}
    for tid in ("chief", "tuner0", "tuner1"):
        log = open(tmp_path / f"{tid}.log", "w")
        procs[tid] = subprocess.Popen(cmd, env=dict(env, KERASTUNER_TUNER_ID=tid), stdout=log,
                                      stderr=subprocess.STDOUT, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        for tid in ("tuner0", "tuner1"):
            assert procs[tid].wait(timeout=400) == 0, (tmp_path / f"{tid}.log").read_text()[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    ran = {tid: (tmp_path / f"{tid}.log").read_text().count("val_accuracy:") for tid in ("tuner0", "tuner1")}
    assert all(n > 0 for n in ran.values()), ran  # both workers trained trials
    trials = [n for n in os.listdir(project) if n.startswith("trial_")]
    assert len(trials) == 4
