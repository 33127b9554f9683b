"""Adversarial round 4: selection notes checked against valid/test, NaN never printed, a tuning project resumes
only its own search, settings files checked like flags, models of other shapes refused on load, output
folders checked before work, render bounds and leftovers, symlinks under --recursive."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import soundfile as sf

from nsynth_keras import evaluate, predict, render, train, tune
from nsynth_keras.core.config import INPUT_SHAPE, NUM_SAMPLES, SAMPLE_RATE
from nsynth_keras.core.errors import DataError, SettingsError
from nsynth_keras.data.datasets import DataSpec, make_dataset
from nsynth_keras.deploy.tflite import write_tflite
from nsynth_keras.learn.training import TrainConfig
from nsynth_keras.learn.tuning import SEARCH_RECORD, SearchConfig, search, search_record
from nsynth_keras.models.cnn import build_baseline
from nsynth_keras.sounds.rendering import RenderConfig, pitch_offset
from nsynth_keras.sounds.rendering import render as render_notes
from tests.conftest import write_split


def note_wav(path, seconds: float = 4.0) -> str:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 220 * t), SAMPLE_RATE, subtype="PCM_16")
    return str(path)


# --------------------------------------------------------------------------- 1. selection notes


def test_select_extra_notes_are_checked_against_valid_and_test(tiny_nsynth, tmp_path):
    test_audio = os.path.join(tiny_nsynth, "nsynth-test", "audio")
    copied, _ = sf.read(os.path.join(test_audio, sorted(os.listdir(test_audio))[0]))
    chooser = tmp_path / "chooser"
    write_split(chooser, "valid", [
        {"instrument": "mallet_heldout", "family": "mallet", "pitch": 70},          # fine
        {"instrument": "renamed_copy", "family": "bass", "pitch": 71, "wave": copied},  # a test note's audio
    ])
    spec = DataSpec(data_dir=tiny_nsynth, select_extra=(str(chooser),))
    with pytest.raises(DataError, match="1 --select-extra notes overlap the valid/test splits") as err:
        make_dataset(spec, "valid", part="extra")
    assert "identical to test note" in str(err.value) and "choosing the best epoch on them" in str(err.value)
    kept = make_dataset(DataSpec(data_dir=tiny_nsynth, select_extra=(str(chooser),), drop_overlap=True), "valid",
                        part="extra")
    assert kept.num_examples == 1 and len(kept.overlap_dropped) == 1
    for spelling in (tiny_nsynth, tiny_nsynth + "/"):
        with pytest.raises(DataError, match="--select-extra .* is the --data-dir itself"):
            make_dataset(DataSpec(data_dir=tiny_nsynth, select_extra=(spelling,)), "valid")
    with pytest.raises(DataError, match="--select-extra lists one folder twice"):
        make_dataset(DataSpec(data_dir=tiny_nsynth, select_extra=(str(chooser), str(chooser) + "/")), "valid")


# --------------------------------------------------------------------------- 2. NaN, 5. shapes


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory) -> str:
    model = build_baseline()
    weights = model.get_weights()
    weights[-1] = np.full_like(weights[-1], np.nan)  # the last bias
    model.set_weights(weights)
    path = str(tmp_path_factory.mktemp("nan") / "nan.keras")
    model.save(path)
    return path


def test_predict_hop_refuses_nan_probabilities(nan_model, tmp_path, capsys):
    wav = note_wav(tmp_path / "x.wav", seconds=9)
    csv = tmp_path / "out.csv"
    assert predict.main([nan_model, wav, "--hop", "4", "--csv", str(csv)]) == 1
    captured = capsys.readouterr()
    assert "NaN or infinite probabilities (in 2 of 2 windows" in captured.err
    import csv as csv_module

    rows = list(csv_module.DictReader(csv.open()))
    assert len(rows) == 1 and rows[0]["probability_1"] == "" and "NaN" in rows[0]["error"]
    assert "1 unreadable" in captured.err


def small_model(outputs: int, input_shape=INPUT_SHAPE) -> keras.Model:
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(outputs)])


@pytest.mark.parametrize("outputs", [5, 20])
def test_a_model_with_other_outputs_is_refused_on_load_by_every_runtime(tmp_path, capsys, outputs, tiny_nsynth):
    wav = note_wav(tmp_path / "x.wav")
    keras_path = str(tmp_path / "m.keras")
    small_model(outputs).save(keras_path)
    tflite_path = str(tmp_path / "m.tflite")
    write_tflite(small_model(outputs), "fp32", tflite_path)
    for path in (keras_path, tflite_path):
        assert predict.main([path, wav]) == 2
        err = capsys.readouterr().err
        assert f"its output [batch, {outputs}] is not one probability for each of the 11 families" in err
        assert evaluate.main([path, "--data-dir", tiny_nsynth]) == 2
        assert "11 families" in capsys.readouterr().err
    wrong_input = str(tmp_path / "w.keras")
    small_model(11, (NUM_SAMPLES // 2,)).save(wrong_input)
    assert predict.main([wrong_input, wav]) == 2
    assert f"its input [batch, {NUM_SAMPLES // 2}] is neither a log-mel" in capsys.readouterr().err


# --------------------------------------------------------------------------- 3. a tuning project's record


def test_a_tuning_project_resumes_only_its_own_search_and_keeps_its_record(tmp_path, tiny_nsynth):
    project = tmp_path / "p"
    project.mkdir()
    started = SearchConfig(project=str(project), algorithm="random", max_trials=3, epochs=2)
    spec = DataSpec(data_dir=tiny_nsynth)
    (project / SEARCH_RECORD).write_text(json.dumps(search_record(started, spec)))
    before = (project / SEARCH_RECORD).read_text()
    other_settings = SearchConfig(project=str(project), algorithm="bayesian", max_trials=5, epochs=4)
    with pytest.raises(DataError, match=r"algorithm 'random' -> 'bayesian', epochs 2 -> 4\)"):
        search(other_settings, spec, log=lambda *a: None)
    with pytest.raises(DataError, match="the data flags"):
        search(started, DataSpec(data_dir=tiny_nsynth, filters=spec.filters.__class__(max_examples=2)),
               log=lambda *a: None)
    assert (project / SEARCH_RECORD).read_text() == before
    assert sorted(os.listdir(project)) == [SEARCH_RECORD]


# --------------------------------------------------------------------------- 4. settings files


@pytest.fixture
def recorded_run(tmp_path, tiny_nsynth) -> dict:
    return {"settings": TrainConfig(epochs=1, out=str(tmp_path / "runs"), tflite=False).to_json(),
            "data": DataSpec(data_dir=tiny_nsynth).to_json()}


BAD_SETTINGS = [
    (("settings",), [], "settings: expected a JSON object"),
    (("settings", "epochs"), "3", 'settings.epochs: "3" is not an integer'),
    (("settings", "epochs"), 1.5, "settings.epochs: 1.5 is not an integer"),
    (("settings", "epochs"), float("inf"), "settings.epochs: inf is not an integer"),
    (("settings", "epochs"), 0, "settings.epochs: 0 must be at least 1"),
    (("settings", "learning_rate"), "0.001", 'settings.learning_rate: "0.001" is not a number'),
    (("settings", "dropout"), None, "settings.dropout: must not be null"),
    (("settings", "batch_size"), 4.5, "settings.batch_size: 4.5 is not an integer"),
    (("settings", "batch_size"), 10**23, "settings.batch_size: 100000000000000000000000 must be below"),
    (("settings", "strides"), 3, "settings.strides: 3 is not one of 1, 2"),
    (("settings", "tflite"), "no", 'settings.tflite: "no" is not true or false'),
    (("settings", "deterministic"), "false", 'settings.deterministic: "false" is not true or false'),
    (("settings", "mixed_precision"), True, "settings.mixed_precision: true is not a string"),
    (("settings", "seed"), -1, "settings.seed: -1 must be at least 0"),
    (("settings", "filters"), [16, "x"], 'settings.filters: item "x" is not an integer'),
    (("settings", "colour"), 1, "unknown settings colour"),
    (("data", "max_examples"), 7.9, "data.max_examples: 7.9 is not an integer"),
    (("data", "max_examples"), -5, "data.max_examples: -5 must be at least 1"),
    (("data", "pitch_min"), "40", 'data.pitch_min: "40" is not an integer'),
    (("data", "extra_train"), "abc", 'data.extra_train: "abc" is not a list'),
    (("data", "instrument_sources"), ["wood"], 'data.instrument_sources: item "wood" is not one of'),
    (("data", "source"), "mp3", 'data.source: "mp3" is not one of'),
]


@pytest.mark.parametrize("keys,value,message", BAD_SETTINGS, ids=[m.split(":")[0] + str(i)
                                                                  for i, (_, _, m) in enumerate(BAD_SETTINGS)])
def test_a_config_file_is_checked_like_the_flags(recorded_run, tmp_path, capsys, keys, value, message):
    record = recorded_run
    target = record
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(record))
    assert train.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --config {path}: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before any folder or data


def test_numbers_out_of_range_name_their_flag(tiny_nsynth, capsys):
    for flags, message in ((["--seed", "-1"], "argument --seed: '-1' must be at least 0"),
                           (["--seed", "99999999999"], "argument --seed: '99999999999' must be below"),
                           (["--batch-size", "99999999999999999999999"], "argument --batch-size: '9999")):
        with pytest.raises(SystemExit):
            train.main(["--data-dir", tiny_nsynth, *flags])
        assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- 6. a corrupt trial


def test_a_corrupt_trial_is_skipped_by_name_in_the_summary(tmp_path, capsys):
    project = tmp_path / "p"
    values = {"base_filters": 8, "blocks": 2, "kernel_size": 3, "padding": "same", "strides": 1, "dropout": 0.0,
              "dense_units": 0, "learning_rate": 1e-3}
    good = {"trial_id": "00", "status": "COMPLETED", "hyperparameters": {"values": values},
            "metrics": {"metrics": {"val_accuracy": {"observations": [{"value": [0.5]}]}}}}
    for name, trial in (("trial_00", good), ("trial_01", {"trial_id": "x"}), ("trial_02", "not json")):
        (project / name).mkdir(parents=True)
        (project / name / "trial.json").write_text(json.dumps(trial) if name != "trial_02" else "{not json")
    assert tune.main(["--project", str(project), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "trial_01" in out and "trial_02" in out
    assert "1 trials completed" in out
    only_bad = tmp_path / "q"
    (only_bad / "trial_01").mkdir(parents=True)
    (only_bad / "trial_01" / "trial.json").write_text('{"trial_id": "x"}')
    assert tune.main(["--project", str(only_bad), "--summary"]) == 2
    assert "no trials yet" in capsys.readouterr().err


# --------------------------------------------------------------------------- 8. output folders


def test_output_folders_below_a_file_are_refused_before_any_work(tmp_path, tiny_nsynth, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    model = str(tmp_path / "m.keras")
    build_baseline().save(model)
    cases = [(train.main, ["--data-dir", tiny_nsynth, "--out", str(tmp_path / "runs"),
                           "--cache-dir", str(blocker / "cache")], "--cache-dir"),
             (render.main, ["--out", str(blocker / "r"), "--programs", "0"], "--out"),
             (evaluate.main, [model, "--data-dir", tiny_nsynth, "--out", str(blocker / "e")], "--out"),
             (evaluate.main, [model, "--data-dir", tiny_nsynth, "--out", str(blocker)], "--out")]
    for main, argv, flag in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} {blocker}") and ("is a file" in err), err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- 9-11. render


def test_render_cleans_a_killed_writes_leftovers_and_bounds_its_numbers(tmp_path, capsys):
    out = tmp_path / "r"
    config = RenderConfig(str(out), programs=(0,), pitch_step=40, velocities=(100,))
    render_notes(config, log=lambda *a: None, show_progress=False)
    audio = out / "nsynth-train" / "audio"
    leftover = audio / ".piano.wav.abc123.tmp"
    leftover.mkdir()
    (leftover / "out").write_bytes(b"half a wav")
    render_notes(config, log=lambda *a: None, show_progress=False)
    assert not leftover.exists()
    for flags, message in ((["--synth", "1000000000"], "argument --synth: '1000000000' must be at most 1000"),
                           (["--pitch-step", "1000", "--programs", "0"],
                            "argument --pitch-step: '1000' must be at most 127")):
        with pytest.raises(SystemExit) as stop:
            render.main(["--out", str(tmp_path / "s"), *flags])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    # The same bounds hold for a config made in code (the declaration is the one source)
    with pytest.raises(SettingsError, match="--synth: 1001 must be at most 1000"):
        render_notes(RenderConfig(str(tmp_path / "s"), synth=1001))
    assert not (tmp_path / "s" / "nsynth-train" / "render.json").exists()


def test_a_step_past_every_pitch_says_so(tmp_path, capsys):
    program_map = tmp_path / "map.csv"
    program_map.write_text("0,keyboard,acoustic,60,60\n")
    seed = next(s for s in range(100) if pitch_offset(RenderConfig("x", pitch_step=2, seed=s), "timgm6mb", 0) == 1)
    assert render.main(["--out", str(tmp_path / "r"), "--program-map", str(program_map), "--pitch-step", "2",
                        "--seed", str(seed)]) == 2
    err = capsys.readouterr().err
    assert "--pitch-step 2 steps over every pitch" in err and "none of the 0 requested programs" not in err


# --------------------------------------------------------------------------- 12. symlinks


def test_recursive_predict_names_looping_links_and_follows_folder_links_once(tmp_path, capsys):
    model = str(tmp_path / "m.keras")
    build_baseline().save(model)
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    note_wav(notes / "sub" / "a.wav")
    (notes / "loop.wav").symlink_to(notes / "loop.wav")
    (notes / "sub" / "back").symlink_to(notes)  # a folder link back up: a loop
    linked = tmp_path / "elsewhere"
    linked.mkdir()
    note_wav(linked / "b.wav")
    (notes / "more").symlink_to(linked)
    assert predict.main([model, str(notes), "--recursive", "--csv", str(tmp_path / "out.csv")]) == 1
    err = capsys.readouterr().err
    assert "loop.wav: a symbolic link that leads to no file" in err
    assert "back: skipped, a link to a folder already read" in err
    rows = (tmp_path / "out.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0].rsplit("/", 1)[1] for r in rows) == ["a.wav", "b.wav", "loop.wav"]


# --------------------------------------------------------------------------- resuming a cosine schedule


def test_a_cosine_run_resumes_only_with_its_epochs(tmp_path, tiny_nsynth):
    from nsynth_keras.learn.training import prepare_run_folder
    from nsynth_keras.models.runs import RunError

    spec = DataSpec(data_dir=tiny_nsynth)
    for schedule, refused in (("constant", False), ("cosine", True)):
        config = TrainConfig(epochs=3, lr_schedule=schedule, out=str(tmp_path), run_name=schedule)
        paths = prepare_run_folder(config, spec)
        (tmp_path / f".{schedule}.partial" / "history.csv").write_text("epoch,loss\n0,1.0\n")  # a finished epoch
        longer = TrainConfig(epochs=5, lr_schedule=schedule, out=str(tmp_path), run_name=schedule)
        if refused:
            with pytest.raises(RunError, match=r"\(epochs\) \(--lr-schedule cosine decays over the run's --epochs"):
                prepare_run_folder(longer, spec)
        else:
            assert prepare_run_folder(longer, spec).partial == paths.partial
