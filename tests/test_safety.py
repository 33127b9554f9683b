"""The adversarial cases: run names that escape --out, NaN runs, files that pass the checks but not
the decoder, lying headers, unbounded tuning, path-like keys, resuming the wrong run, hostile models."""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc

import keras
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsynth_keras import evaluate, export, predict, tflite_check, train, tune
from nsynth_keras.core.config import NUM_SAMPLES
from nsynth_keras.core.errors import DataError, SettingsError
from nsynth_keras.data.audio import AudioError, probe_wav, read_wav
from nsynth_keras.data.datasets import DataSpec, table_dataset
from nsynth_keras.data.notes import Filters, read_examples
from nsynth_keras.deploy import prediction, tflite
from nsynth_keras.learn.training import StopOnNonFinite, TrainConfig, fit_callbacks, prepare_run_folder
from nsynth_keras.learn.tuning import SearchConfig, project_lock, search
from nsynth_keras.models.cnn import build_baseline
from nsynth_keras.models.runs import RunError, RunFolder, check_run_name
from tests.conftest import read_or_named_error


def sentinel_tree(root):
    """An --out folder with an earlier run in it, inside a parent with a file of its own."""
    parent = root / "parent"
    out = parent / "runs"
    (out / "earlier-run").mkdir(parents=True)
    (out / "earlier-run" / "model.keras").write_text("x")
    (parent / "precious.txt").write_text("keep me")
    return parent, out


@pytest.mark.parametrize("name", [".", "..", "../x", "a/b", "/tmp/abs", ".hidden", ""])
def test_run_names_that_are_not_one_plain_name_are_refused_and_nothing_is_deleted(tmp_path, capsys, name):
    parent, out = sentinel_tree(tmp_path)
    rc = train.main(["--data-dir", str(tmp_path / "nodata"), "--out", str(out), "--run-name", name, "--overwrite"])
    assert rc == 2
    assert "--run-name" in capsys.readouterr().err
    assert (out / "earlier-run" / "model.keras").exists() and (parent / "precious.txt").read_text() == "keep me"
    assert sorted(os.listdir(parent)) == ["precious.txt", "runs"] and os.listdir(out) == ["earlier-run"]


def test_check_run_name_accepts_plain_names():
    assert check_run_name("baseline-2026_11.v2") == "baseline-2026_11.v2"


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(tmp_path, data_dir, capsys):
    out = tmp_path / "runs"
    (out / "photos").mkdir(parents=True)
    (out / "photos" / "cat.jpg").write_text("x")
    rc = train.main(["--data-dir", data_dir, "--out", str(out), "--run-name", "photos", "--overwrite"])
    assert rc == 2 and "not a run folder" in capsys.readouterr().err
    assert (out / "photos" / "cat.jpg").exists() and os.listdir(out) == ["photos"]


def test_out_that_is_a_file_or_bad_flag_values_are_one_line_errors(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert train.main(["--out", str(a_file), "--data-dir", str(tmp_path)]) == 2
    assert "is a file" in capsys.readouterr().err
    for flags, message in ((["--learning-rate", "-1"], "argument --learning-rate: '-1' must be above 0"),
                           (["--epochs", "0"], "argument --epochs: '0' must be at least 1"),
                           (["--dropout", "1.5"], "argument --dropout: '1.5' must be below 1")):
        with pytest.raises(SystemExit) as exit_:  # refused where the flag is parsed: usage + one error line
            train.main([*flags, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.strip().splitlines()[-1].endswith(message)
    # The library checks configs made in code, and every config's settings fail the same way
    with pytest.raises(SettingsError, match="--dropout: 1.5 must be below 1"):
        TrainConfig(dropout=1.5).validate()
    from nsynth_keras.learn.tuning import SearchConfig
    from nsynth_keras.sounds.rendering import RenderConfig

    for config, message in ((SearchConfig(str(tmp_path / "p"), max_trials=0), "--max-trials: 0 must be at least 1"),
                            (RenderConfig(str(tmp_path / "r"), pitch_step=0), "--pitch-step: 0 must be at least 1")):
        with pytest.raises(SettingsError, match=message):
            config.validate()


def test_a_failed_train_leaves_no_partial_folder(tmp_path, capsys):
    assert train.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path), "--run-name", "r"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_resume_only_with_the_same_settings_and_overwrite_clears_the_partial(tmp_path, data_dir):
    spec = DataSpec(data_dir=data_dir)
    first = TrainConfig(out=str(tmp_path), run_name="r", epochs=5)
    paths = prepare_run_folder(first, spec)
    with open(paths.partial.history_csv, "w") as f:  # one finished epoch
        f.write("epoch,loss\n0,2.0\n")
    os.makedirs(paths.partial.file(".saved_model.abc.tmp"))  # a write that a kill interrupted
    more_epochs = TrainConfig(out=str(tmp_path), run_name="r", epochs=8)
    again = prepare_run_folder(more_epochs, spec)  # epochs may change on resume
    assert not os.path.exists(again.partial.file(".saved_model.abc.tmp"))
    other_model = TrainConfig(out=str(tmp_path), run_name="r", model="cnn", filters=(8, 16))
    with pytest.raises(RunError, match="started with other settings.*filters.*--overwrite"):
        prepare_run_folder(other_model, spec)
    with pytest.raises(RunError, match="data"):
        prepare_run_folder(first, DataSpec(data_dir=data_dir, filters=Filters(pitch_max=60)))
    fresh = prepare_run_folder(TrainConfig(out=str(tmp_path), run_name="r", model="cnn", overwrite=True), spec)
    assert not os.path.exists(fresh.partial.history_csv) and not fresh.resuming


def test_an_epoch_is_logged_before_its_backup_marks_it_done(tmp_path):
    callbacks = fit_callbacks(RunFolder(str(tmp_path)), "r", False, patience=2)
    kinds = [type(c).__name__ for c in callbacks]
    assert kinds[-1] == "Backup" and kinds.index("CSVLogger") < kinds.index("Backup")


def test_weights_cut_off_mid_write_leave_the_last_good_file(tmp_path, monkeypatch):
    """The best and backup weights go through a temporary name: a kill during a save (here an interrupt after half
    a file) leaves the last good file, which still loads (Keras wrote in place, and a resumed run failed on it)."""
    from nsynth_keras.learn.training import Backup
    from nsynth_keras.models.cnn import build_baseline
    from nsynth_keras.models.runs import save_weights

    model = build_baseline()
    path = str(tmp_path / "best.weights.h5")
    save_weights(model, path)
    good = open(path, "rb").read()

    def killed_mid_write(self, filepath, **kwargs):
        open(filepath, "wb").write(good[: len(good) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "save_weights", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_weights(model, path)
    backup = Backup(str(tmp_path / "backup"))
    backup.set_model(model)
    with pytest.raises(KeyboardInterrupt):
        backup._save_model()
    monkeypatch.undo()
    assert open(path, "rb").read() == good
    model.load_weights(path)
    assert not os.path.exists(tmp_path / "backup" / "latest.weights.h5")  # no half file under the backup's name


def test_a_diverging_run_stops_with_an_error_and_leaves_nothing(data_dir, tmp_path, capsys):
    rc = train.main(["--data-dir", data_dir, "--max-examples", "40", "--epochs", "3", "--learning-rate", "1e12",
                     "--mixed-precision", "off", "--out", str(tmp_path), "--run-name", "boom", "--no-tflite"])
    err = capsys.readouterr().err
    assert rc == 2 and "run boom:" in err and "training diverged" in err
    assert os.listdir(tmp_path) == []  # no run folder, and no partial one to resume


def test_a_nan_loss_stops_training_with_an_error_naming_the_run():
    stop = StopOnNonFinite("my-run")
    stop.on_train_batch_end(0, {"loss": 1.5})
    with pytest.raises(RunError, match="run my-run: the loss became nan at epoch 1, batch 4"):
        stop.on_train_batch_end(3, {"loss": math.nan})


def test_huge_float_samples_are_skipped_by_name_before_training(tmp_path, real_wav, examples):
    audio = tmp_path / "nsynth-train" / "audio"
    audio.mkdir(parents=True)
    wave, rate = sf.read(real_wav, dtype="float32")
    key = os.path.basename(real_wav)[:-4]
    sf.write(audio / "huge.wav", wave * 1e20, rate, subtype="FLOAT")
    shutil.copy(real_wav, audio / f"{key}.wav")
    (tmp_path / "nsynth-train" / "examples.json").write_text(
        json.dumps({"huge": dict(examples[key], note_str="huge"), key: examples[key]}))
    table = read_examples(str(tmp_path), "train")
    assert len(table) == 1 and "huge.wav: samples reach " in table.skipped[0]
    assert "far outside audio full scale" in table.skipped[0]


def nan_model(path):
    model = build_baseline()
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    model.save(path)
    return path


def test_a_model_giving_nan_is_an_error_not_bare_nan_json(tmp_path, real_wav, data_dir, capsys):
    path = nan_model(str(tmp_path / "nan.keras"))
    assert predict.main([path, real_wav, "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # valid JSON
    assert doc["predictions"] == [] and "NaN" in doc["errors"][0]["error"]
    assert evaluate.main([path, "--data-dir", data_dir, "--max-examples", "8"]) == 2
    assert "NaN or infinite probabilities" in capsys.readouterr().err


def pcm16_wav(frames: np.ndarray, rate: int = 16000, data_size: int | None = None, extra: bytes = b"",
              fmt_size: int = 16) -> bytes:
    data = frames.astype("<i2").tobytes()
    size = len(data) if data_size is None else data_size
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16) + b"\0" * (fmt_size - 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", fmt_size) + fmt + b"data" + struct.pack("<I", size) + data + extra
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_a_partial_frame_in_the_data_chunk_takes_the_safe_path_and_trains(tmp_path, examples, real_wav):
    audio = tmp_path / "nsynth-train" / "audio"
    audio.mkdir(parents=True)
    samples = (np.sin(np.arange(NUM_SAMPLES) * 0.05) * 8000).astype(np.int16)
    # 2N + 1 bytes: not a whole number of 16-bit frames (plus the RIFF pad byte).
    (audio / "odd.wav").write_bytes(pcm16_wav(samples, data_size=2 * NUM_SAMPLES + 1, extra=b"\0\0"))
    info = probe_wav(str(audio / "odd.wav"))
    assert not info.standard  # so the strict TF decoder never sees it
    key = os.path.basename(real_wav)[:-4]
    (tmp_path / "nsynth-train" / "examples.json").write_text(json.dumps({"odd": dict(examples[key], note_str="odd")}))
    table = read_examples(str(tmp_path), "train")
    [ex] = list(table_dataset(table))
    assert ex["audio"].shape == (NUM_SAMPLES,)


def test_a_lying_sample_rate_is_refused_and_long_files_are_read_only_as_far_as_needed(tmp_path):
    liar = tmp_path / "one_hz.wav"
    liar.write_bytes(pcm16_wav(np.zeros(64_000, np.int16), rate=1))
    with pytest.raises(AudioError, match="sample rate 1 Hz is outside 1000-384000 Hz"):
        read_wav(str(liar))
    long = tmp_path / "three_minutes_48k.wav"
    sf.write(long, (0.1 * np.sin(np.arange(48_000 * 180) * 0.01)).astype(np.float32), 48_000, subtype="PCM_16")
    tracemalloc.start()
    clip = read_wav(str(long))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert clip.waveform.shape == (NUM_SAMPLES,) and any("cropped 180.00 s" in f for f in clip.fixups)
    assert peak < 20 * 2**20  # the whole file as float32 would be 33 MiB, resampled in float64 more


@pytest.mark.parametrize("key, change, reason", [
    ("../../../elsewhere/x", {}, "not a plain file name"),
    ("sub/x", {}, "not a plain file name"),
    ("x1", {"instrument_family": 3.9}, "instrument_family 3.9 is not an integer"),
    ("x2", {"instrument_family": True}, "instrument_family True is not an integer"),
    ("x3", {"instrument_family": "7"}, "instrument_family '7' is not an integer"),
    ("x4", {"instrument_family": 11}, "instrument_family 11 is not 0..10"),
    ("x5", {"instrument_family": 3, "instrument_family_str": "brass"}, "contradicts instrument_family_str 'brass'"),
    ("x6", {"pitch": "60"}, "pitch '60' is not an integer"),
])
def test_examples_json_keys_are_names_and_labels_are_checked(tmp_path, examples, real_wav, key, change, reason):
    split = tmp_path / "data" / "nsynth-train"
    (split / "audio").mkdir(parents=True)
    good = os.path.basename(real_wav)[:-4]
    shutil.copy(real_wav, split / "audio")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(real_wav, outside / "x.wav")  # a wav the key would reach
    entry = {k: v for k, v in {**examples[good], **change}.items()}
    if "instrument_family" in change and "instrument_family_str" not in change:
        entry.pop("instrument_family_str", None)
    (split / "examples.json").write_text(json.dumps({good: examples[good], key: entry}))
    table = read_examples(str(tmp_path / "data"), "train")
    assert table.note == [examples[good]["note_str"]] and len(table.skipped) == 1
    assert reason in table.skipped[0]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(
    st.one_of(st.text(max_size=12), st.sampled_from(["../x", "..", ".", "a/b", "note-060-100"])),
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.dictionaries(
        st.sampled_from(["instrument_family", "instrument_source", "pitch", "velocity", "instrument_family_str"]),
        st.one_of(st.integers(-2, 12), st.floats(allow_nan=True), st.booleans(), st.text(max_size=4), st.none()))),
    max_size=6))
def test_fuzzed_examples_json_entries_are_kept_valid_or_skipped_by_name(tmp_path_factory, real_wav, entries):
    root = tmp_path_factory.mktemp("fuzz")
    audio = root / "nsynth-train" / "audio"
    audio.mkdir(parents=True)
    for key in entries:
        if key and "/" not in key and "\0" not in key and key not in (".", ".."):
            shutil.copy(real_wav, audio / f"{key}.wav")
    (root / "nsynth-train" / "examples.json").write_text(json.dumps(entries))
    try:
        table = read_examples(str(root), "train")
    except DataError as err:
        assert "no usable notes" in str(err)
        return
    for path, family, source in zip(table.path, table.family, table.source):
        assert os.path.dirname(path) == str(audio) and type(family) is int and 0 <= family < 11 and 0 <= source < 3
    assert len(table) + len(table.skipped) == len(entries)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=st.sampled_from([1, 500, 8000, 16000, 44100, 500_000]), frames=st.integers(1, 2000),
       odd=st.booleans(), fmt_size=st.sampled_from([16, 18, 20]), extra=st.sampled_from([b"", b"\0", b"LIST\0\0\0\0"]))
def test_fuzzed_wav_headers_either_decode_the_same_both_ways_or_fail_by_name(tmp_path, rate, frames, odd, fmt_size,
                                                                               extra):
    from nsynth_keras.data.datasets import _decode_fast

    samples = (np.random.default_rng(frames).uniform(-1, 1, frames) * 20000).astype(np.int16)
    path = tmp_path / "x.wav"
    path.write_bytes(pcm16_wav(samples, rate, 2 * frames + odd, extra=(b"\0" if odd else b"") + extra,
                               fmt_size=fmt_size))
    decoded = read_or_named_error(path)
    if decoded is None:
        return
    info, clip = decoded
    assert 1000 <= info.sample_rate <= 384_000 and clip.waveform.shape == (NUM_SAMPLES,)
    if info.standard:  # then TF's strict decoder reads it too, with the same samples
        np.testing.assert_allclose(_decode_fast(str(path)).numpy(), clip.waveform, atol=1e-4)


def test_savedmodel_folders_are_refused_unless_trusted(trained_run, real_wav, capsys):
    saved = os.path.join(trained_run, "saved_model")
    assert predict.main([saved, real_wav]) == 2
    assert "runs its ops" in capsys.readouterr().err
    assert predict.main([saved, real_wav, "--trust-saved-model"]) == 0


def test_model_file_mistakes_get_clear_errors(trained_run, data_dir, tmp_path, real_wav, capsys):
    truncated = tmp_path / "model.keras"
    truncated.write_bytes(open(os.path.join(trained_run, "model.keras"), "rb").read()[:5000])
    assert predict.main([str(truncated), real_wav]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert export.main([os.path.join(trained_run, "model.keras"), "--data-dir", data_dir]) == 2
    assert "export takes a run folder" in capsys.readouterr().err
    # One .tflite file is checked against the model.keras beside it.
    rc = tflite_check.main([os.path.join(trained_run, "model.tflite"), "--data-dir", data_dir, "--max-examples", "12"])
    out = capsys.readouterr().out
    assert rc == 0 and "model.tflite" in out


def test_predict_reads_files_in_batches_in_order(trained_run, real_wav, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(prediction, "BATCH", 2)
    files = []
    for i in range(5):
        files.append(str(tmp_path / f"n{i}.wav"))
        shutil.copy(real_wav, files[-1])
    assert predict.main([trained_run, *files, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["file"] for p in doc["predictions"]] == files


def test_tflite_files_are_deterministic_whatever_the_clock_says(monkeypatch):
    """The metadata's zip is stamped with the current time unless the export fixes its dates: two exports
    a day apart must still give the same bytes (this fails without tflite.fixed_zip_dates)."""
    import time

    model = build_baseline()
    first = tflite.to_tflite(model, "fp32")
    later = time.time() + 86_400 * 3
    monkeypatch.setattr(time, "time", lambda: later)
    assert tflite.to_tflite(model, "fp32") == first


def test_tune_limits_are_validated_and_a_project_has_one_process(tmp_path, data_dir, capsys):
    for flags, message in ((["--max-trials", "0"], "argument --max-trials: '0' must be at least 1"),
                           (["--epochs", "0"], "argument --epochs: '0' must be at least 1")):
        with pytest.raises(SystemExit):
            tune.main(["--data-dir", data_dir, "--project", str(tmp_path / "p"), "--algorithm", "random", *flags])
        assert message in capsys.readouterr().err
    with pytest.raises(SettingsError, match="--max-trials: 0 must be at least 1"):
        SearchConfig(max_trials=0).validate()
    project = tmp_path / "locked"
    project.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (project / ".lock-chief").write_text(str(sleeper.pid))
        with pytest.raises(RunError, match=f"another tune process on .* is running \\(pid {sleeper.pid}"):
            with project_lock(str(project)):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with project_lock(str(project)):  # the holder is gone: its lock is taken over
        assert (project / ".lock-chief").read_text() == str(os.getpid())
    assert not (project / ".lock-chief").exists()


def test_tune_never_overwrites_a_folder_that_is_not_a_project(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("x")
    with pytest.raises(DataError, match="not a tuning project"):
        search(SearchConfig(project=str(folder), overwrite=True, algorithm="random", max_trials=1), DataSpec())
    assert (folder / "chapter1.tex").exists()


def test_loading_a_model_is_safe_mode(tmp_path):
    """A .keras file whose config smuggles a Lambda is refused (Keras safe_mode), not run."""
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    from nsynth_keras.models.runs import load_keras

    with pytest.raises(RunError, match="cannot load"):
        load_keras(str(tmp_path / "lambda.keras"))


def test_a_failed_run_leaves_keras_global_precision_as_it_was(tmp_path):
    import keras

    before = keras.mixed_precision.global_policy().name
    flags = ["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path), "--mixed-precision", "bf16"]
    assert train.main(flags) == 2
    assert keras.mixed_precision.global_policy().name == before
