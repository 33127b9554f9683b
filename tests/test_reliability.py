"""Bad input, interruption and determinism."""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsynth_keras.core.config import FAMILIES, NUM_SAMPLES
from nsynth_keras.core.errors import DataError
from nsynth_keras.data.audio import read_wav
from nsynth_keras.data.datasets import table_dataset
from nsynth_keras.data.notes import read_examples
from tests.conftest import read_or_named_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bad_split(data_dir, examples, tmp_path_factory):
    """A json/wav split whose notes are a real note written in every problematic way."""
    root = tmp_path_factory.mktemp("bad")
    audio = root / "nsynth-train" / "audio"
    audio.mkdir(parents=True)
    key = next(iter(examples))
    src = os.path.join(data_dir, "nsynth-train", "audio", f"{key}.wav")
    wave, rate = sf.read(src, dtype="float32")
    raw = open(src, "rb").read()
    files = {
        "good": lambda p: shutil.copy(src, p),
        "empty": lambda p: open(p, "wb").close(),
        "truncated_header": lambda p: open(p, "wb").write(raw[:20]),
        "not_a_wav": lambda p: open(p, "w").write("this is a text file\n" * 10),
        "corrupt": lambda p: open(p, "wb").write(raw[:12] + b"\xff" * 200),
        "stereo": lambda p: sf.write(p, np.stack([wave, wave], 1), rate),
        "pcm8": lambda p: sf.write(p, wave, rate, subtype="PCM_U8"),
        "pcm24": lambda p: sf.write(p, wave, rate, subtype="PCM_24"),
        "float": lambda p: sf.write(p, wave, rate, subtype="FLOAT"),
        "rate22k": lambda p: sf.write(p, wave[::2][: 22050 * 4 // 2], 22050),
        "short": lambda p: sf.write(p, wave[:8000], rate),
        "long": lambda p: sf.write(p, np.concatenate([wave, wave]), rate),
        "nan": lambda p: sf.write(p, np.where(np.arange(len(wave)) == 500, np.nan, wave), rate, subtype="FLOAT"),
        "inf": lambda p: sf.write(p, np.where(np.arange(len(wave)) == 9, np.inf, wave), rate, subtype="FLOAT"),
        "silence": lambda p: sf.write(p, np.zeros_like(wave), rate),
    }
    entries = {}
    for i, (name, make) in enumerate(files.items()):
        note = f"guitar_acoustic_{i:03d}-060-100"
        make(str(audio / f"{note}.wav"))
        entries[note] = dict(examples[key], note_str=note, instrument_str=name, instrument_family=i % 11,
                             instrument_family_str=FAMILIES[i % 11])
    entries["guitar_acoustic_900-060-100"] = dict(examples[key], note_str="missing", instrument_family=3,
                                                  instrument_family_str="guitar")
    entries["bad_entry"] = {"instrument_family": "x"}
    (root / "nsynth-train" / "examples.json").write_text(json.dumps(entries))
    return str(root), entries


def test_every_bad_input_is_fixed_up_or_skipped_with_its_reason(bad_split):
    root, entries = bad_split
    table = read_examples(root, "train")
    kept = set(table.instrument)
    assert kept == {"good", "stereo", "pcm8", "pcm24", "float", "rate22k", "short", "long", "silence"}
    reasons = "\n".join(table.skipped)
    for problem in ("empty file", "not a readable audio file", "NaN or infinite", "file not found", "'bad_entry'"):
        assert problem in reasons
    assert len(table.skipped) == 8  # empty, truncated, not_a_wav, corrupt, nan, inf, missing, bad entry
    # Decoded in the pipeline: every kept note has the right shape, finite samples and its own label.
    for ex in table_dataset(table):
        note = ex["note"].numpy().decode()
        assert ex["audio"].shape == (NUM_SAMPLES,) and np.isfinite(ex["audio"].numpy()).all()
        assert int(ex["family"]) == entries[note]["instrument_family"]
    with pytest.raises(DataError, match="--strict"):
        read_examples(root, "train", strict=True)


def test_fixups_are_reported(bad_split):
    root, _ = bad_split
    audio = os.path.join(root, "nsynth-train", "audio")
    entries = json.loads(open(os.path.join(root, "nsynth-train", "examples.json")).read())
    by_name = {meta["instrument_str"]: note for note, meta in entries.items() if note.startswith("guitar_acoustic_0")}
    clip = read_wav(os.path.join(audio, by_name["rate22k"] + ".wav"))
    assert "resampled 22050 Hz to 16000 Hz" in clip.fixups
    assert any("cropped" in f for f in read_wav(os.path.join(audio, by_name["long"] + ".wav")).fixups)
    assert read_wav(os.path.join(audio, by_name["pcm24"] + ".wav")).fixups == []


def wav_header(channels, rate, bits, n_frames, fmt=1):
    block = channels * bits // 8
    data_size = n_frames * block
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, fmt, channels, rate, rate * block, block, bits) +
            b"data" + struct.pack("<I", data_size))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=400),
    st.builds(lambda h, body: h + body,
              st.builds(wav_header, st.integers(1, 3), st.sampled_from([8000, 16000, 22050, 44100, 48000]),
                        st.sampled_from([8, 16, 24, 32]), st.integers(0, 3000), st.sampled_from([1, 3])),
              st.binary(max_size=3000)),
))
def test_decoder_never_crashes_nor_returns_a_wrong_shape(tmp_path, blob):
    from nsynth_keras.data.datasets import _decode_fast

    path = tmp_path / "x.wav"
    path.write_bytes(blob)
    decoded = read_or_named_error(path)
    if decoded is None:
        return
    info, clip = decoded
    assert clip.waveform.shape == (NUM_SAMPLES,) and clip.waveform.dtype == np.float32
    assert np.isfinite(clip.waveform).all()
    if info.standard:  # the fast in-graph path must give the same samples as libsndfile
        fast = _decode_fast(str(path)).numpy()
        np.testing.assert_allclose(fast, clip.waveform, atol=1 / 32768)


def _train_cmd(data_dir, out, epochs):
    return [sys.executable, "-m", "nsynth_keras.train", "--data-dir", data_dir, "--epochs", str(epochs),
            "--out", str(out), "--run-name", "resumable", "--no-tflite", "--seed", "3"]


@pytest.mark.slow
def test_killed_training_resumes_where_it_stopped(small_nsynth, tmp_path):
    epochs = 8
    cmd = _train_cmd(small_nsynth, tmp_path, epochs)
    env = dict(os.environ, PYTHONUNBUFFERED="1", CI="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = tmp_path / ".resumable.partial" / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().strip().splitlines()) >= 3:  # header + 2 epochs done
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "resumable").exists()  # nothing half-written under the final name
    done_before = len(log.read_text().strip().splitlines()) - 1
    assert 2 <= done_before < epochs
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout
    # Keras prints "Epoch k/8" only for the epochs it runs: the finished ones are not repeated.
    assert f"Epoch {done_before + 1}/{epochs}" in rerun.stdout and f"Epoch 1/{epochs}" not in rerun.stdout
    history = json.load(open(tmp_path / "resumable" / "history.json"))
    assert history["epoch"] == list(range(epochs))
    assert {"model.keras", "saved_model", "config.json"} <= set(os.listdir(tmp_path / "resumable"))


@pytest.mark.slow
def test_deterministic_runs_give_identical_metrics(data_dir, tmp_path):
    from nsynth_keras import train

    histories = []
    for name in ("a", "b"):
        rc = train.main(["--data-dir", data_dir, "--max-examples", "48", "--epochs", "2", "--seed", "7",
                         "--deterministic", "--out", str(tmp_path), "--run-name", name, "--no-tflite"])
        assert rc == 0
        histories.append(json.load(open(tmp_path / name / "history.json")))
    assert histories[0] == histories[1]


def test_missing_model_and_tfds_config_errors(tmp_path, capsys):
    from nsynth_keras import predict, train

    assert predict.main([str(tmp_path / "nothing"), "x.wav"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert train.main(["--source", "tfds", "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "not prepared" in capsys.readouterr().err


@pytest.mark.slow  # several processes: run by .ci/run (python -m pytest -m slow)
def test_two_workers_train_together_and_the_chief_exports(data_dir, tmp_path):
    from tests.conftest import free_port

    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    cmd = [sys.executable, "-m", "nsynth_keras.train", "--data-dir", data_dir, "--max-examples", "64",
           "--epochs", "1", "--batch-size", "16", "--strategy", "multiworker", "--out", str(tmp_path),
           "--run-name", "mw", "--no-tflite", "--early-stopping", "3", "--cache-dir", str(tmp_path / "cache")]
    procs = []
    for i in range(2):
        env = dict(os.environ, CI="1", PYTHONUNBUFFERED="1",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "2 replica(s) in sync, global batch 32 (16 per replica)" in outs[0]
    assert "train shard 1/2" in outs[0] and "train shard 2/2" in outs[1]
    # Synchronous training: both workers saw the same all-reduced metrics.
    epoch_lines = [next(line for line in out.splitlines() if line.startswith("Epoch 1/1")) for out in outs]
    assert epoch_lines[0] == epoch_lines[1]
    assert re.search(r"Epoch 1 trained in \d+ s: 64 notes on all workers, \d+ notes/s", outs[0]), outs[0][-2000:]
    assert "Worker 1 finished" in outs[1]
    assert sorted(os.listdir(tmp_path)) == ["cache", "mw"]  # the worker's folder is gone, the chief's renamed
    # each worker caches its own log-mels: both score valid, and one cache file cannot have two writers
    assert sorted(os.listdir(tmp_path / "cache")) == ["worker0", "worker1"]
    assert all(any(n.startswith("valid-") for n in os.listdir(tmp_path / "cache" / w)) for w in ("worker0", "worker1"))
    assert {"model.keras", "saved_model", "history.json", "logs"} <= set(os.listdir(tmp_path / "mw"))
    for part in ("train", "validation"):  # TensorBoard event files, as Keras's callback writes them
        assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "mw" / "logs" / part))


def test_custom_loop_stops_early_and_logs_to_tensorboard(tmp_path):
    """The multi-worker loop on the default strategy: a model that cannot improve stops after patience."""
    import keras
    import tensorflow as tf

    from nsynth_keras.core.files import read_history
    from nsynth_keras.learn import distributed
    from nsynth_keras.models.cnn import build_cnn

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 64, 64, 1)).astype(np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 11, 16), 11)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    strategy = tf.distribute.get_strategy()
    model = build_cnn((4, 8))
    optimizer = keras.optimizers.Adam(0.0)  # frozen weights: val_accuracy never improves after epoch 1
    distributed.fit(strategy, model, optimizer, ds, ds, epochs=10, work_dir=str(tmp_path), is_chief=True,
                    patience=2)
    assert read_history(str(tmp_path / "history.csv"))["epoch"] == [0, 1, 2]
    for part in ("train", "validation"):
        assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "logs" / part))


def test_multiworker_without_tf_config_is_a_clear_error(data_dir, tmp_path, capsys, monkeypatch):
    from nsynth_keras import train

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert train.main(["--data-dir", data_dir, "--strategy", "multiworker", "--out", str(tmp_path)]) == 2
    assert "needs TF_CONFIG" in capsys.readouterr().err
