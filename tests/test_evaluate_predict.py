import json
import os

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from nsynth_keras import evaluate, predict
from nsynth_keras.core.config import FAMILIES
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.reports.evaluation import report


def test_report_agrees_with_a_hand_checked_case():
    # 5 notes: bass, bass, brass, guitar, guitar; predicted bass, brass, brass, guitar, bass.
    y = np.array([0, 0, 1, 3, 3])
    probs = np.full((5, 11), 0.01)
    for i, p in enumerate([0, 1, 1, 3, 0]):
        probs[i, p] = 0.9
    probs[0, 1] = 0.05  # second guess of note 0
    probs[4, 3] = 0.05  # note 4: guitar is its second guess -> in its top 3
    probs[1, 0] = 0.0  # note 1: bass is its last guess -> not in its top 3
    r = report(y, probs, sources=np.array([0, 0, 1, 1, 2]))
    assert r["num_notes"] == 5 and r["accuracy"] == pytest.approx(3 / 5)
    bass, brass, guitar = r["families"]["bass"], r["families"]["brass"], r["families"]["guitar"]
    assert (bass["precision"], bass["recall"], bass["support"]) == (0.5, 0.5, 2)
    assert (brass["precision"], brass["recall"]) == (0.5, 1.0)
    assert brass["f1"] == pytest.approx(2 / 3)
    assert (guitar["precision"], guitar["recall"]) == (1.0, 0.5)
    # Macro-F1 over the 3 families present, not over 11 with zeros.
    assert r["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert r["families"]["vocal"]["support"] == 0 and "f1" not in r["families"]["vocal"]
    assert r["top3_accuracy"] == pytest.approx(4 / 5)
    assert r["confusion_matrix"]["counts"][0][:2] == [1, 1] and r["confusion_matrix"]["counts"][3][0] == 1
    assert r["by_source"]["acoustic"] == {"accuracy": 0.5, "num_notes": 2}
    assert r["by_source"]["synthetic"] == {"accuracy": 0.0, "num_notes": 1}


def test_evaluate_real_split_writes_json_and_png_for_keras_and_tflite(trained_run, data_dir, capsys):
    assert evaluate.main([trained_run, "--data-dir", data_dir, "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "macro-F1" in out and "by source" in out
    r = json.load(open(os.path.join(trained_run, "eval_valid.json")))
    assert r["num_notes"] == 200 and os.path.getsize(os.path.join(trained_run, "confusion_valid.png")) > 10_000
    assert np.sum(r["confusion_matrix"]["counts"]) == 200
    assert r["families"]["synth_lead"]["support"] == 0 and len(r["macro_f1_families"]) == 10
    # The twin audit splits the notes in two, and the two accuracies make up the whole.
    novel, twins = r["novel"], r["twins"]
    assert novel["num_notes"] + twins["num_notes"] == 200 and novel["num_notes"] == r["twin_audit"]["novel"]
    assert novel["accuracy"] * novel["num_notes"] + twins["accuracy"] * twins["num_notes"] == \
        pytest.approx(r["accuracy"] * 200)
    assert "novel notes (no training twin): accuracy" in out
    tflite = os.path.join(trained_run, "model.tflite")
    assert evaluate.main([tflite, "--data-dir", data_dir, "--split", "valid"]) == 0
    r_lite = json.load(open(os.path.join(trained_run, "eval_valid_model.json")))
    assert r_lite["model_kind"] == "tflite"
    assert r_lite["confusion_matrix"] == r["confusion_matrix"]


def test_evaluate_onset_delay_scores_the_notes_moved_later_beside_the_plain_report(trained_run, data_dir, capsys,
                                                                                    tmp_path):
    from nsynth_keras.deploy.inference import load_classifier
    from nsynth_keras.reports.evaluation import predict_split_with

    out = str(tmp_path)
    assert evaluate.main([trained_run, "--data-dir", data_dir, "--split", "valid", "--out", out]) == 0
    assert evaluate.main([trained_run, "--data-dir", data_dir, "--split", "valid", "--out", out,
                          "--onset-delay", "0.25"]) == 0
    assert "every note 250 ms later" in capsys.readouterr().out
    plain = json.load(open(os.path.join(out, "eval_valid.json")))  # not overwritten
    moved = json.load(open(os.path.join(out, "eval_valid_onset250ms.json")))
    assert plain["onset_delay"] == 0 and moved["onset_delay"] == 0.25 and moved["num_notes"] == 200
    y, _, (probs,), _ = predict_split_with([load_classifier(trained_run)], DataSpec(data_dir=data_dir), "valid",
                                           onset_delay=0.25)
    assert moved["accuracy"] == pytest.approx(float((probs.argmax(1) == y).mean()))
    assert moved["confusion_matrix"] != plain["confusion_matrix"]  # the delayed notes are what it scored
    assert evaluate.main([trained_run, "--data-dir", data_dir, "--onset-delay", "4"]) == 2
    assert "--onset-delay 4: give at least 0 and under 4 s" in capsys.readouterr().err


def test_evaluate_missing_model_is_one_clear_error(tmp_path, data_dir, capsys):
    assert evaluate.main([str(tmp_path), "--data-dir", data_dir]) == 2
    assert "not a run folder (no model.keras)" in capsys.readouterr().err
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer")
    assert evaluate.main([str(bad), "--data-dir", data_dir]) == 2
    assert "not a valid TFLite model" in capsys.readouterr().err


def test_predict_handles_any_wav_and_reports_failures(trained_run, real_wav, tmp_path, capsys):
    wave, rate = sf.read(real_wav, dtype="float32")
    stereo_44k = tmp_path / "stereo_44k.wav"
    resampled = resample_poly(wave, 441, 160).astype(np.float32)
    sf.write(stereo_44k, np.stack([resampled, 0.5 * resampled], axis=1), 44100)
    short = tmp_path / "one_second.wav"
    sf.write(short, wave[:rate], rate)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")

    rc = predict.main([trained_run, real_wav, str(stereo_44k), str(short), str(corrupt), "--top-k", "2", "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.err.count("\n") == 1 and "corrupt.wav" in captured.err
    doc = json.loads(captured.out)
    assert [os.path.basename(p["file"]) for p in doc["predictions"]] == [
        os.path.basename(real_wav), "stereo_44k.wav", "one_second.wav"]
    assert [len(p["top"]) for p in doc["predictions"]] == [2, 2, 2]
    orig, stereo, one_s = doc["predictions"]
    assert orig["fixups"] == []
    assert any("mixed 2 channels" in f for f in stereo["fixups"])
    assert any("resampled 44100 Hz" in f for f in stereo["fixups"])
    assert any("zero-padded 1.00 s" in f for f in one_s["fixups"])
    # The 44.1 kHz stereo copy is the same note: the same top family.
    assert stereo["top"][0]["family"] == orig["top"][0]["family"]
    assert doc["errors"][0]["file"].endswith("corrupt.wav")


def test_predict_text_output_from_tflite(trained_run, real_wav, capsys):
    assert predict.main([os.path.join(trained_run, "model.tflite"), real_wav]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(real_wav + ": ") and line.count(",") == 2


def test_predict_windows_of_a_recording_and_a_sample_pack_folder(trained_run, data_dir, tmp_path, capsys):
    import csv
    import io
    import shutil

    audio = os.path.join(data_dir, "nsynth-test", "audio")
    names = sorted(os.listdir(audio))[:3]
    recording = tmp_path / "three_notes.wav"
    sf.write(recording, np.concatenate([sf.read(os.path.join(audio, n), dtype="float32")[0] for n in names]), 16000)
    assert predict.main([trained_run, str(recording), "--hop", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [w["start_s"] for w in doc["predictions"][0]["windows"]] == [0.0, 4.0, 8.0]
    assert predict.main([trained_run, os.path.join(audio, names[1]), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    window, alone = doc["predictions"][0]["windows"][1]["top"][0], single["predictions"][0]["top"][0]
    assert window["family"] == alone["family"]
    assert window["probability"] == pytest.approx(alone["probability"], abs=1e-5)
    assert predict.main([trained_run, str(recording), "--hop", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"][0]["windows"]) == 5  # 0, 2, 4, 6, 8 s

    pack = tmp_path / "pack"
    (pack / "sub").mkdir(parents=True)
    for n in names:
        shutil.copy(os.path.join(audio, n), pack / "sub" / n)
    (pack / "broken.wav").write_bytes(b"RIFF1234")
    (pack / "notes.txt").write_text("not audio, not listed")
    assert predict.main([trained_run, str(pack)]) == 2
    assert "pass --recursive" in capsys.readouterr().err
    out_csv = tmp_path / "families.csv"
    assert predict.main([trained_run, str(pack), "--recursive", "--top-k", "2", "--csv", str(out_csv)]) == 1
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [os.path.basename(r["file"]) for r in rows] == ["broken.wav", *names]
    broken, first = rows[0], rows[1]
    assert broken["error"] and not broken["family_1"]
    assert first["family_1"] in FAMILIES and float(first["probability_1"]) >= float(first["probability_2"])
