"""The shipped pretrained model (saved_models/pretrained): small, reproduces the scores its model card gives,
its waveform TFLite agrees with it, every exported format meets the on-device thresholds, and the commands use it
when no RUN is given."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from nsynth_keras import evaluate, export, predict, tflite_check
from nsynth_keras.core.files import write_json, write_labels
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.pipeline import load_split
from nsynth_keras.deploy.inference import KerasClassifier, TFLiteClassifier
from nsynth_keras.deploy.webpage import model_info, waveform_model
from nsynth_keras.models.runs import PRETRAINED, RunFolder, load_keras, run_frontend, run_or_pretrained
from nsynth_keras.reports.evaluation import evaluate as evaluate_model

SHIPPED = ("model.keras", "model_waveform.tflite", "labels.txt", "config.json", "evaluation.json", "MODEL_CARD.md")


def shipped_config() -> dict:
    with open(RunFolder(PRETRAINED).config, encoding="utf-8") as f:
        return json.load(f)


def members() -> list[dict]:
    """The shipped ensemble's members as config.json records them ([] for a single run)."""
    return shipped_config().get("ensemble", {}).get("members", [])


@pytest.fixture(scope="module")
def recorded() -> dict:
    with open(os.path.join(PRETRAINED, "evaluation.json"), encoding="utf-8") as f:
        return json.load(f)


def test_the_shipped_folder_is_complete_and_small():
    shipped = SHIPPED if members() else (*SHIPPED, "history.json")  # an ensemble has no training history
    sizes = {name: os.path.getsize(os.path.join(PRETRAINED, name)) for name in shipped}
    assert sum(sizes.values()) < 5 * 2**20, sizes  # kept in git: one CNN or a small ensemble, not more
    card = open(os.path.join(PRETRAINED, "MODEL_CARD.md"), encoding="utf-8").read()
    assert "--publish saved_models/pretrained" in card and "## Not for" in card
    assert "Notes that do not start at the onset" in card  # bench/onset.py measured its configuration
    # The rebuild command trains every member: each configuration at each seed.
    command = next(line for line in card.splitlines() if "--publish saved_models/pretrained" in line).split()
    names = command[command.index("--only") + 1:command.index("--seeds")]
    seeds = command[command.index("--seeds") + 1:command.index("--publish")]
    runs = sorted(m["settings"]["run_name"] for m in members()) or [shipped_config()["settings"]["run_name"]]
    assert runs == sorted(f"{name.replace('+', '_')}-seed{seed}" for name in names for seed in seeds)


def test_it_reproduces_its_recorded_scores_on_the_shared_split(data_dir, recorded, tmp_path):
    for split in ("valid", "test"):
        r, _ = evaluate_model(PRETRAINED, DataSpec(data_dir=data_dir), split, out=str(tmp_path))
        was = recorded[split]
        assert r["num_notes"] == was["num_notes"]
        assert r["confusion_matrix"]["counts"] == was["confusion_matrix"]["counts"]  # every note named alike
        assert r["accuracy"] == was["accuracy"] and r["macro_f1"] == pytest.approx(was["macro_f1"], abs=1e-12)
        assert r["novel"] == was["novel"] and r["twins"] == was["twins"]
        assert r["unheard_kinds"] == was["unheard_kinds"] and r["other_copies"] == was["other_copies"]
    card = open(os.path.join(PRETRAINED, "MODEL_CARD.md"), encoding="utf-8").read()
    test = recorded["test"]
    assert f"| test | {test['num_notes']} | {test['accuracy']:.3f} | {test['macro_f1']:.3f} |" in card
    assert f"{test['novel']['accuracy']:.3f} (n={test['novel']['num_notes']})" in card


def test_its_waveform_tflite_agrees_on_every_test_note(data_dir):
    notes = load_split(DataSpec(data_dir=data_dir), "test", ("audio", "mel"), frontend=run_frontend(PRETRAINED)[0])
    model = KerasClassifier(RunFolder(PRETRAINED).model)
    keras_probs = model.predict(notes["audio"] if model.takes_waveform else notes["mel"])
    lite = TFLiteClassifier(os.path.join(PRETRAINED, "model_waveform.tflite"))
    assert lite.takes_waveform
    lite_probs = lite.predict(notes["audio"])
    assert (lite_probs.argmax(1) == keras_probs.argmax(1)).all()
    assert np.abs(lite_probs - keras_probs).max() < 1e-3


def test_commands_take_it_when_no_run_is_given(real_wav, capsys, tmp_path):
    assert run_or_pretrained(None) == PRETRAINED and run_or_pretrained("x") == "x"
    assert predict.main([real_wav, "--json"]) == 0
    captured = capsys.readouterr()
    assert "No RUN given: using the pretrained model" in captured.err
    result = json.loads(captured.out)
    assert result["model"].startswith(PRETRAINED) and result["predictions"][0]["top"][0]["family"]
    assert waveform_model(run_or_pretrained(None)).endswith("model_waveform.tflite")
    info = model_info(os.path.join(PRETRAINED, "model_waveform.tflite"))
    assert info["sample_rate"] == 16000 and info["clip_seconds"] == 4 and 0 < info["scores"]["test_accuracy"] <= 1
    assert 0 < info["scores"]["test_novel_accuracy"] <= 1 and 0 < info["confidence_floor"] < 1


def test_evaluate_without_a_run_reports_the_pretrained_model(data_dir, capsys, tmp_path):
    assert evaluate.main(["--data-dir", data_dir, "--split", "valid", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "No RUN given: using the pretrained model" in out and "novel notes (no training twin)" in out


def shipped_cnns(dest) -> list[str]:
    """Run folders of the shipped CNNs: the shipped folder itself, or for an ensemble one member of each frontend
    (taken out of its model.keras, with the frontend its config.json records)."""
    if not members():
        return [str(shutil.copytree(PRETRAINED, dest / "pretrained"))]
    ensemble = load_keras(RunFolder(PRETRAINED).model)
    runs, frontends = [], []
    for i, member in enumerate(members()):
        if member["frontend"] in frontends:
            continue
        frontends.append(member["frontend"])
        folder = RunFolder(str(dest / f"member_{i}"))
        os.makedirs(folder.path)
        ensemble.get_layer(f"member_{i}").save(folder.model)
        write_labels(folder.labels)
        write_json(folder.config, {"frontend": member["frontend"]})
        runs.append(folder.path)
    return runs


def test_every_format_it_exports_meets_the_on_device_thresholds(data_dir, tmp_path, capsys):
    """The quality bar of the quantized formats (int8: >= 97% top-1 agreement with Keras) on trained models (each
    frontend of the shipped ones): a few-epoch smoke model's near-uniform scores flip under int8 on one CPU kind and
    not on another."""
    for run in shipped_cnns(tmp_path):
        assert export.main([run, "--data-dir", data_dir]) == 0
        rc = tflite_check.main([run, "--data-dir", data_dir, "--split", "valid"])
        rows = {r["model"]: r for r in json.load(open(os.path.join(run, "tflite_check_valid.json")))}
        assert rc == 0, capsys.readouterr().out
        assert rows["model_int8.tflite"]["agreement"] >= 0.97 and rows["model_fp16.tflite"]["agreement"] >= 0.99
    if members():  # the ensemble itself exports its one format, the waveform model, which agrees
        run = shutil.copytree(PRETRAINED, tmp_path / "pretrained")
        assert export.main([str(run), "--data-dir", data_dir]) == 0
        assert tflite_check.main([str(run), "--data-dir", data_dir, "--split", "valid"]) == 0
        rows = json.load(open(run / "tflite_check_valid.json"))
        assert rows[0]["model"] == "model_waveform.tflite"  # and MediaPipe's runs of it
        assert all(r["model"].startswith("model_waveform.tflite") and r["agreement"] == 1.0 for r in rows), rows
