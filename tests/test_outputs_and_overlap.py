"""Adversarial round 3: output paths never delete a folder, one writer per run name and tuning project,
extra training data checked against valid/test, streamed long-file prediction, validated numbers."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from nsynth_keras import predict, render, train
from nsynth_keras.core.config import NUM_SAMPLES, SAMPLE_RATE
from nsynth_keras.core.errors import DataError
from nsynth_keras.core.files import atomic_path, check_free_space
from nsynth_keras.data.audio import AudioError, open_recording, recording_windows
from nsynth_keras.data.datasets import DataSpec, make_dataset
from nsynth_keras.data.notes import Filters, read_examples
from nsynth_keras.data.pipeline import cache_key
from nsynth_keras.learn.training import TrainConfig
from nsynth_keras.learn.training import train as train_run
from nsynth_keras.learn.tuning import SearchConfig, search
from nsynth_keras.models.cnn import build_baseline
from nsynth_keras.models.runs import RunError
from nsynth_keras.sounds.rendering import RenderConfig, load_program_map
from nsynth_keras.sounds.rendering import render as render_notes
from tests.conftest import write_split


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> str:
    """predict only needs some model: the homework CNN, untrained, saved as .keras."""
    path = str(tmp_path_factory.mktemp("model") / "baseline.keras")
    build_baseline().save(path)
    return path


def sine(seconds: float, rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1234.5 * t)
    return np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else wave


@pytest.fixture
def live_pid():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


# --------------------------------------------------------------------------- 1. an output path is a file


def test_predict_csv_never_replaces_a_folder(untrained_model, tmp_path, capsys):
    wav = tmp_path / "note.wav"
    sf.write(wav, sine(4), SAMPLE_RATE)
    runs = tmp_path / "saved_models"
    (runs / "precious-run").mkdir(parents=True)
    (runs / "precious-run" / "model.keras").write_text("weights")
    assert predict.main([untrained_model, str(wav), "--csv", str(runs)]) == 2
    err = capsys.readouterr().err
    assert f"--csv {runs} is a folder" in err and "nothing was written or removed" in err
    assert (runs / "precious-run" / "model.keras").read_text() == "weights"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

    out = tmp_path / "families.csv"
    assert predict.main([untrained_model, str(wav), "--csv", str(out)]) == 0
    assert f"Wrote {out}" in capsys.readouterr().err
    out.write_text("old")
    assert predict.main([untrained_model, str(wav), "--csv", str(out)]) == 0
    assert f"Replaced {out}" in capsys.readouterr().err
    assert out.read_text().startswith("file,family_1")


def test_a_file_write_refuses_an_existing_folder_before_writing(tmp_path):
    folder = tmp_path / "keep"
    folder.mkdir()
    (folder / "x").write_text("x")
    with pytest.raises(RunError, match="is a folder"):
        with atomic_path(str(folder)) as tmp, open(tmp, "w") as f:
            f.write("new")
    assert (folder / "x").read_text() == "x"


# --------------------------------------------------------------------------- 2, 3. one writer at a time


def test_tune_overwrite_never_deletes_a_project_another_search_holds(tmp_path, live_pid):
    project = tmp_path / "proj"
    (project / "trial_00").mkdir(parents=True)
    (project / "oracle.json").write_text("{}")
    (project / "trial_00" / "trial.json").write_text("{}")
    (project / ".lock-chief").write_text(str(live_pid))
    with pytest.raises(RunError, match=f"another tune process on .* is running \\(pid {live_pid}"):
        search(SearchConfig(project=str(project), overwrite=True, max_trials=1, epochs=2),
               DataSpec(data_dir=str(tmp_path / "nowhere")))
    assert (project / "trial_00" / "trial.json").exists() and (project / "oracle.json").exists()


def test_a_run_name_has_one_writer_at_a_time(tmp_path, live_pid, capsys):
    out = tmp_path / "runs"
    partial = out / ".r.partial"
    partial.mkdir(parents=True)
    (partial / "history.csv").write_text("epoch,loss\n0,1.0\n")
    (out / ".r.lock").write_text(str(live_pid))
    assert train.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(out), "--run-name", "r",
                       "--overwrite"]) == 2
    assert f"another train of run 'r' in {out} is running (pid {live_pid}" in capsys.readouterr().err
    assert (partial / "history.csv").read_text() == "epoch,loss\n0,1.0\n"


def test_a_lock_left_by_a_dead_train_is_taken_over(tiny_nsynth, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".r.lock").write_text(str(dead.pid))
    run = train_run(TrainConfig(epochs=1, out=str(out), run_name="r", tflite=False, mixed_precision="off"),
                    DataSpec(data_dir=tiny_nsynth), log=lambda *a: None, verbose=0)
    assert os.path.isfile(os.path.join(run, "model.keras")) and not (out / ".r.lock").exists()


# --------------------------------------------------------------------------- 4, 5. extra training data


def test_extra_train_is_never_the_data_dir_nor_given_twice(tiny_nsynth, tmp_path):
    for spelling in (tiny_nsynth, tiny_nsynth + "/", os.path.join(tiny_nsynth, ".", "")):
        with pytest.raises(DataError, match="is the --data-dir itself"):
            make_dataset(DataSpec(data_dir=tiny_nsynth, extra_train=(spelling,), extra_ratio=0.5), "train")
    extra = tmp_path / "extra"
    write_split(extra, "train", [{"instrument": "mallet_z", "family": "mallet"}])
    with pytest.raises(DataError, match="lists one folder twice"):
        make_dataset(DataSpec(data_dir=tiny_nsynth, extra_train=(str(extra), str(extra) + "/")), "train")
    data = make_dataset(DataSpec(data_dir=tiny_nsynth, extra_train=(str(extra),)), "train")
    assert data.num_examples == 6 + 1


def test_extra_notes_that_copy_valid_or_test_are_refused_or_dropped_and_counted(tiny_nsynth, tmp_path):
    test_wavs = sorted(os.listdir(os.path.join(tiny_nsynth, "nsynth-test", "audio")))
    copied, _ = sf.read(os.path.join(tiny_nsynth, "nsynth-test", "audio", test_wavs[0]))
    extra = tmp_path / "extra"
    write_split(extra, "train", [
        {"instrument": "mallet_new", "family": "mallet", "pitch": 70},   # fine
        {"instrument": "renamed_copy", "family": "bass", "pitch": 71, "wave": copied},  # same audio as a test note
        {"instrument": "bass_d", "family": "bass", "pitch": 90},        # a valid instrument
    ])
    spec = DataSpec(data_dir=tiny_nsynth, extra_train=(str(extra),))
    with pytest.raises(DataError, match="2 extra training notes overlap the valid/test splits") as err:
        make_dataset(spec, "train")
    assert "identical to test note" in str(err.value) and "instrument bass_d is in valid/test" in str(err.value)

    runs = tmp_path / "runs"
    run = train_run(TrainConfig(epochs=1, out=str(runs), run_name="d", tflite=False, mixed_precision="off"),
                    DataSpec(data_dir=tiny_nsynth, extra_train=(str(extra),), drop_overlap=True),
                    log=lambda *a: None, verbose=0)
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["extra_notes_dropped_as_overlap"]["count"] == 2
    assert config["notes"]["train"] == 6 + 1
    assert config["data"]["drop_overlap"] is True


def test_extra_ratio_numbers_are_checked(tiny_nsynth, tmp_path, capsys):
    extra = tmp_path / "extra"
    write_split(extra, "train", [{"instrument": "mallet_z", "family": "mallet"}])
    with pytest.raises(DataError, match="selects no extra note"):
        make_dataset(DataSpec(data_dir=tiny_nsynth, extra_train=(str(extra),), extra_ratio=1e-9), "train")
    for bad in ("inf", "nan", "0", "-1"):
        with pytest.raises(SystemExit):
            train.main(["--data-dir", tiny_nsynth, "--extra-train", str(extra), "--extra-ratio", bad])
        assert "--extra-ratio" in capsys.readouterr().err
    assert not (tmp_path / "saved_models").exists()


def test_the_cache_key_follows_the_seed_that_samples_the_notes():
    spec = DataSpec(filters=Filters(max_examples=10))
    assert cache_key(spec, "train", seed=0) != cache_key(spec, "train", seed=1)
    assert cache_key(spec, "train", seed=1) == cache_key(spec, "train", seed=1)


# --------------------------------------------------------------------------- 6, 9. long recordings


@pytest.mark.parametrize("rate,channels", [(SAMPLE_RATE, 1), (44_100, 2), (48_000, 1)])
def test_streamed_windows_equal_the_whole_file_resampled(tmp_path, rate, channels):
    path = tmp_path / "rec.wav"
    sf.write(path, sine(13.3, rate, channels), rate, subtype="FLOAT")
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    whole = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        whole = resample_poly(whole, SAMPLE_RATE // g, rate // g).astype(np.float32)
    rec = open_recording(str(path))
    got = [(s, w) for starts, windows in recording_windows(rec, 1.5, batch=3) for s, w in zip(starts, windows)]
    assert [s for s, _ in got] == list(range(0, len(whole) - NUM_SAMPLES + 1, 24_000))
    for start, window in got:
        np.testing.assert_allclose(window, whole[start : start + NUM_SAMPLES], atol=2e-6)


def test_streaming_a_long_recording_holds_one_batch_not_the_file(tmp_path):
    path = tmp_path / "long.wav"
    seconds, rate = 600, 48_000  # whole: 115 MB as float32 stereo, 38 MB as 16 kHz mono
    with sf.SoundFile(path, "w", rate, 2, subtype="PCM_16") as f:
        block = sine(60, rate, 2)
        for _ in range(seconds // 60):
            f.write(block)
    rec = open_recording(str(path))
    tracemalloc.start()
    windows = sum(len(starts) for starts, _ in recording_windows(rec, 4.0, batch=16))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert windows == seconds // 4
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_recording_limits_count_samples_times_channels(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, sine(5, 32_000, 2), 32_000)
    assert open_recording(str(path), max_samples=5 * 32_000 * 2).num_samples == 5 * SAMPLE_RATE
    with pytest.raises(AudioError, match="320,000 samples .* 2 channels at 32000 Hz"):
        open_recording(str(path), max_samples=5 * 32_000 * 2 - 1)


@pytest.mark.parametrize("hop", ["inf", "nan", "0", "-4", "x"])
def test_predict_hop_must_be_a_finite_positive_number(untrained_model, tmp_path, capsys, hop):
    wav = tmp_path / "note.wav"
    sf.write(wav, sine(4), SAMPLE_RATE)
    with pytest.raises(SystemExit) as exit_:
        predict.main([untrained_model, str(wav), "--hop", hop])
    assert exit_.value.code == 2 and "argument --hop" in capsys.readouterr().err


def test_predict_hop_streams_every_window_of_each_file(untrained_model, tmp_path, capsys):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, sine(12), SAMPLE_RATE)
    sf.write(b, sine(9, 22_050, 2), 22_050)
    assert predict.main([untrained_model, str(a), str(b), "--hop", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [len(p["windows"]) for p in doc["predictions"]] == [3, 2]
    assert doc["predictions"][1]["fixups"] == ["mixed 2 channels to mono", "resampled 22050 Hz to 16000 Hz"]


# --------------------------------------------------------------------------- 10. disk full


def test_train_refuses_to_start_on_a_full_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(RunError, match="only 1 MiB free"):
        check_free_space(str(tmp_path))
    assert train.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "runs"), "--run-name", "x"]) == 2
    assert "only 1 MiB free on its disk" in capsys.readouterr().err
    assert os.listdir(tmp_path / "runs") == []


# --------------------------------------------------------------------------- 12. odd entries


def test_out_of_range_pitch_and_velocity_are_skipped_by_note_name(tmp_path):
    write_split(tmp_path, "train", [{"instrument": "bass_a", "family": "bass", "pitch": 40},
                                    {"instrument": "bass_b", "family": "bass", "pitch": 41}])
    path = tmp_path / "nsynth-train" / "examples.json"
    examples = json.loads(path.read_text())
    examples["bass_a-040-100"]["pitch"] = 200
    examples["bass_b-041-100"]["velocity"] = -7
    path.write_text(json.dumps(examples))
    with pytest.raises(DataError, match="no usable notes"):
        read_examples(str(tmp_path), "train")
    with pytest.raises(DataError, match="entry 'bass_a-040-100': pitch 200 is not a MIDI value 0..127"):
        read_examples(str(tmp_path), "train", strict=True)


# --------------------------------------------------------------------------- 8, 13. render settings


def test_a_failed_render_leaves_no_record_and_programs_are_checked(tmp_path, capsys):
    out = tmp_path / "r"
    bad_sf = tmp_path / "bad.sf2"
    bad_sf.write_bytes(b"not a soundfont")
    assert render.main(["--out", str(out), "--soundfont", str(bad_sf)]) == 2
    assert "cannot load it" in capsys.readouterr().err
    assert not (out / "nsynth-train" / "render.json").exists()
    with pytest.raises(SystemExit) as stop:
        render.main(["--out", str(out), "--programs", "200"])
    assert stop.value.code == 2 and "argument --programs: '200' must be at most 127" in capsys.readouterr().err
    assert render.main(["--out", str(out), "--programs", "120"]) == 2
    assert "--programs 120: not in the program map" in capsys.readouterr().err
    assert render.main(["--out", str(out), "--velocities", "100", "100"]) == 2
    assert "lists a velocity twice" in capsys.readouterr().err
    assert not (out / "nsynth-train" / "render.json").exists()
    summary = render_notes(RenderConfig(str(out), programs=(0,), pitch_step=30, velocities=(100,)), log=lambda *a: None,
                           show_progress=False)
    assert summary.written > 0  # the corrected rerun is not refused as "other settings"


def test_a_program_map_saved_with_a_bom_loads(tmp_path):
    path = tmp_path / "map.csv"
    path.write_bytes("\ufeff0,keyboard,acoustic,21,108\r\n".encode())
    assert load_program_map(str(path))[0].family == "keyboard"


def test_release_fields_come_from_the_checked_table_when_entries_lack_their_names(tmp_path):
    from nsynth_keras.sounds.release import note_example, release_fields

    write_split(tmp_path, "train", [{"instrument": "organ_x", "family": "organ", "source": "electronic"}])
    path = tmp_path / "nsynth-train" / "examples.json"
    examples = json.loads(path.read_text())
    for meta in examples.values():
        for key in ("instrument_family_str", "instrument_source_str", "instrument_str", "note_str"):
            del meta[key]
    path.write_text(json.dumps(examples))
    table = read_examples(str(tmp_path), "train")  # train accepts such entries
    key = next(iter(examples))
    meta = release_fields(examples[key], table, 0)
    assert (meta["instrument_family_str"], meta["instrument_source_str"], meta["instrument_str"]) == (
        "organ", "electronic", "organ_x")
    example = note_example(meta, np.zeros(NUM_SAMPLES, np.float32))  # no KeyError
    assert example.features.feature["instrument_family_str"].bytes_list.value == [b"organ"]


def test_only_the_sampled_extra_notes_are_checked(tiny_nsynth, tmp_path, monkeypatch):
    """--extra-ratio samples an extra folder before its wavs are probed: a 100,000-note folder sampled to 10,000
    reads 10,000 headers (the scale bench spent 67 s probing 98,460 whatever the ratio); a bad note in the
    sample is still skipped by name."""
    from nsynth_keras.data import notes

    extra = tmp_path / "extra"
    write_split(extra, "train", [{"instrument": f"guitar_x{i}", "family": "guitar", "pitch": 40 + i}
                                         for i in range(30)])
    probed = []
    probe = notes._check_wav
    monkeypatch.setattr(notes, "_check_wav", lambda path: probed.append(path) or probe(path))
    data = make_dataset(DataSpec(data_dir=tiny_nsynth, extra_train=(str(extra),), extra_ratio=1.0), "train")
    sampled = [p for p in probed if p.startswith(str(extra))]
    assert len(sampled) == 6 and data.num_examples == 6 + 6  # 6 real notes, 1.0 x 6 extra
    for path in sampled:  # the same sample, every note of it broken: all skipped, and the folder refused by name
        open(path, "wb").write(b"not a wav")
    with pytest.raises(DataError, match=f"no usable notes in {extra}: all 6 checked were skipped"):
        make_dataset(DataSpec(data_dir=tiny_nsynth, extra_train=(str(extra),), extra_ratio=1.0), "train")
