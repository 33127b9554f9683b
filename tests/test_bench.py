"""Smoke tests: each bench script runs on a few real notes and reports its figures."""

import json
import os
import platform
import sys

import pytest

from nsynth_keras.core.config import FAMILIES
from nsynth_keras.sounds.synth import VOICES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))


@pytest.mark.slow
def test_pipeline_bench_reports_every_figure(data_dir, tmp_path):
    import pipeline

    out = pipeline.main(["--data-dir", data_dir, "--max-examples", "16", "--batch-size", "8"])
    for key in ("tfdata_clips_per_s", "librosa_clips_per_s", "cached_over_first", "pipeline_over_in_memory",
                "stream_peak_rss_mib"):
        assert out[key] > 0
    assert out["notes"] == 16 and len(out["targets"]) == 3
    assert out["librosa_max_abs_diff"] < 0.05  # the librosa loop computes the same features
    # Reading 100,000 rendered notes' listing keeps about 675 bytes a note (1,690 when the parse's dicts were all kept
    # until the end: their freed memory stayed pinned by the strings among them).
    assert out["read_notes"] == 100_000 and 0 < out["read_bytes_per_note"] < 1_000
    # A 300,000-note file list, shuffled by computed positions: about 400 bytes a note (a shuffle buffer of the
    # whole list held 1,421).
    assert out["index_notes"] == 300_000 and 0 < out["index_bytes_per_note"] < 1_000


def test_inference_bench_times_every_format(trained_run):
    import inference

    result = inference.main([trained_run, "--repeats", "3"])
    assert {"keras model(x)", "keras model.predict(x)", "saved_model serve(x)", "tflite model.tflite"} <= set(
        result["latency_ms"])
    assert all(ms > 0 for ms in result["latency_ms"].values())


@pytest.mark.slow
def test_accuracy_bench_quick(data_dir, tmp_path):
    import accuracy

    assert accuracy.main(["--data-dir", data_dir, "--quick", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "accuracy_quick.json").exists()
    assert "| baseline |" in (tmp_path / "accuracy_quick.md").read_text()


@pytest.mark.slow
def test_accuracy_bench_leaves_each_source_out_in_turn(data_dir, tmp_path, monkeypatch):
    import accuracy

    tiny = {"synth": 1, "split": "train", "pitch_step": 12, "velocities": (100,)}
    monkeypatch.setitem(accuracy.SYNTH_SETS, "synth-a", {**tiny, "seed": 2})
    monkeypatch.setitem(accuracy.SYNTH_SETS, "synth-b", {**tiny, "seed": 3})
    monkeypatch.setitem(accuracy.SYNTH_SETS, accuracy.HELDOUT, {**tiny, "seed": 4, "split": "valid"})
    monkeypatch.setitem(accuracy.CONFIGS, "two-sets", ({}, ("synth-a", "synth-b"), {}))
    common = ["--data-dir", data_dir, "--quick", "--results", str(tmp_path), "--render-cache", str(tmp_path / "r"),
              "--only", "two-sets"]
    assert accuracy.main(["--loso", *common]) == 0  # no table row yet: said, nothing run
    assert not (tmp_path / "accuracy_quick.json").exists()
    assert accuracy.main(common) == 0
    assert accuracy.main(["--loso", *common]) == 0
    entry = json.loads((tmp_path / "accuracy_quick.json").read_text())["configs"]["two-sets"]
    notes = {s: len(json.load(open(tmp_path / "r" / s / "nsynth-train" / "examples.json"))) for s in ("synth-a",
                                                                                                      "synth-b")}
    for left_out in ("synth-a", "synth-b"):
        got = entry["loso"][left_out]["0"]["left_out"]
        assert got["set"] == left_out and got["num_notes"] == notes[left_out] and 0 <= got["accuracy"] <= 1
    summary = entry["summary"]["loso_accuracy"]
    assert summary["seeds"] == [0] and summary["mean"] == pytest.approx(
        (summary["sets"]["synth-a"] + summary["sets"]["synth-b"]) / 2)
    assert "Leave one source out" in (tmp_path / "accuracy_quick.md").read_text()


@pytest.mark.slow
def test_precision_bench_times_every_policy(data_dir):
    import precision

    result = precision.main(["--data-dir", data_dir, "--max-examples", "16", "--epochs", "1"])
    assert set(result["examples_per_s"]) == {"float32", "mixed_bfloat16", "mixed_float16"}
    assert result["speed_vs_float32"]["float32"] == 1.0 and all(v > 0 for v in result["examples_per_s"].values())


@pytest.mark.slow
def test_gpu_bench_writes_log_mels_and_times_precisions_on_any_keras_backend(data_dir, tmp_path, monkeypatch):
    """The GPU bench's two steps: log-mels as .npy here (TensorFlow), then the timing on whatever backend Keras has
    (JAX on the GPU machine; TensorFlow on this CPU with --allow-cpu). Without a GPU it refuses unless told."""
    import gpu

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    mels = tmp_path / "mels"
    assert gpu.main(["features", "--data-dir", data_dir, "--max-examples", "48", "--out", str(mels)]) == 0
    import numpy as np

    x, y = np.load(mels / "train_x.npy"), np.load(mels / "train_y.npy")
    assert x.shape == (48, 64, 64, 1) and y.shape == (48,) and np.isfinite(x).all()
    out = tmp_path / "gpu.json"
    run = ["run", "--features", str(mels), "--rounds", "1", "--epochs", "1", "--repeat", "2", "--batches", "16",
           "--policies", "float32", "mixed_bfloat16", "--json", str(out)]
    if gpu.accelerator("tensorflow") is None:
        with pytest.raises(SystemExit, match="no GPU visible"):
            gpu.main(run)
    result = gpu.main([*run, "--allow-cpu"])
    assert set(result["examples_per_s"]) == {"float32 batch 16", "mixed_bfloat16 batch 16"}
    assert all(v > 0 for v in result["examples_per_s"].values()) and result["examples_per_epoch"] == 96
    assert result["mixed_bfloat16_batch16_over_float32"] > 0 and json.load(open(out))["backend"] == "tensorflow"
    # Keras was loaded already: the run step must not name another backend for this process's later children
    assert "KERAS_BACKEND" not in os.environ
    with pytest.raises(SystemExit, match="missing"):
        gpu.main(["run", "--features", str(tmp_path / "nothing"), "--allow-cpu"])


@pytest.mark.slow
def test_speed_bench_caps_the_isa_and_compares_keras_and_pytorch_side_by_side(data_dir, tmp_path):
    """--isa avx2 caps oneDNN whatever the CPU (read back from oneDNN's own log), and the cells are timed side by
    side: Keras with 1 and 32 steps per call, and PyTorch where it is installed (the bench extra)."""
    import speed

    try:
        import torch  # noqa: F401
    except ImportError:  # PyTorch is benchmark-only: pip install --no-deps -r requirements-bench.txt
        cells = ["keras float32", "keras float32 steps1"]
    else:
        cells = ["keras float32", "keras float32 steps1", "torch float32"]
    out = tmp_path / "speed.json"
    result = speed.main(["--data-dir", data_dir, "--max-examples", "32", "--rounds", "1", "--epochs", "1",
                         "--cells", *cells, "--isa", "avx2", "--json", str(out)])
    assert set(result["examples_per_s"]) == set(cells) and all(v > 0 for v in result["examples_per_s"].values())
    assert result["isa_cap"] == "avx2" and any("isa:Intel AVX2" in line for line in result["isa_reported"]["keras"])
    assert not any("AVX-512" in line for line in result["isa_reported"]["keras"])
    if platform.machine() == "x86_64":  # TensorFlow's own choice on AVX2 CPUs is Eigen; the package turns oneDNN on
        assert "conv2d in a oneDNN convolution kernel: yes" in result["isa_reported"]["keras"]
    assert result["default_steps_over_steps1"] > 0 and json.load(open(out))["isa_cap"] == "avx2"
    from nsynth_keras.learn.training import cpu_flags

    assert result["cpu"]["avx512_bf16"] == ("avx512_bf16" in cpu_flags())
    if "torch float32" in cells:
        assert result["keras_over_torch_float32"] > 0 and result["keras_steps1_over_torch_float32"] > 0
        assert any("capability" in line for line in result["isa_reported"]["torch"])


def test_the_isa_cap_reaches_onednn(monkeypatch):
    """On an AVX2-only machine the avx2 cap changes nothing, so cap lower: oneDNN must report the capped ISA."""
    import speed

    monkeypatch.setitem(speed.ISA_CAPS, "sse41", {"ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert any("isa:Intel SSE4.1" in line for line in speed.isa_in_use("keras", "sse41"))


def test_runs_group_by_seed_or_by_replicate():
    import argparse

    import ensemble

    parser = argparse.ArgumentParser()
    names = [f"{config}-seed{seed}" for config in ("log", "pcen") for seed in range(6)]
    assert ensemble.seed_groups(parser, names) == {s: [s, s + 6] for s in range(6)}
    # --replicates 3: seeds s and s+3 of both configurations in one ensemble of four
    assert ensemble.seed_groups(parser, names, 3) == {s: [s, s + 3, s + 6, s + 9] for s in range(3)}
    with pytest.raises(SystemExit):
        ensemble.check_grouping(parser, argparse.Namespace(replicates=3, per_seed=False))


@pytest.mark.slow
def test_ensemble_bench_scores_members_and_their_average(trained_run, data_dir, tmp_path):
    import ensemble

    out = tmp_path / "ensemble.json"
    result = ensemble.main([trained_run, trained_run, "--name", "twice", "--data-dir", data_dir, "--json", str(out)])
    for split in ("valid", "test"):
        rows = result["splits"][split]
        assert {"all", "novel"} <= set(rows) and (split == "valid" or "other_copies" in rows)
        for row in rows.values():  # two copies of one model: the average is the model
            assert len(row["members"]) == 2 and row["members_std"] == 0 and row["ensemble"] == row["members"][0]
    assert json.load(open(out))["twice"]["members"] == [os.path.basename(trained_run)] * 2
    # --per-seed: one ensemble per seed of a mix of configurations (here a and b of seeds 0 and 1, all one model)
    runs = []
    for name in ("a-seed0", "b-seed0", "a-seed1", "b-seed1"):
        os.symlink(trained_run, tmp_path / name)
        runs.append(str(tmp_path / name))
    result = ensemble.main([*runs, "--per-seed", "--name", "mix", "--data-dir", data_dir, "--json", str(out)])
    row = result["splits"]["test"]["all"]
    assert row["per_seed"]["ensembles"] == {0: row["ensemble"], 1: row["ensemble"]} and row["per_seed"]["std"] == 0
    with pytest.raises(SystemExit):
        ensemble.main([trained_run, *runs, "--per-seed", "--data-dir", data_dir, "--json", str(out)])


def test_the_accuracy_report_chooses_on_valid_novel_over_the_onset_delays_where_measured():
    import accuracy
    import onset

    results_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results")
    results = json.load(open(os.path.join(results_dir, "accuracy.json")))["configs"]
    entries = json.load(open(os.path.join(results_dir, "onset.json")))
    robust = {k: onset.over_delays(v)["valid"]["novel"] for k, v in entries.items() if k in results}
    on_time = max((k for k in results if "valid_novel_accuracy" in results[k]["summary"]),
                  key=lambda k: results[k]["summary"]["valid_novel_accuracy"]["mean"])
    assert max(robust, key=robust.get) != on_time  # the two criteria disagree here: the test tells them apart
    report = accuracy.markdown(results, None, entries)
    assert f"chosen by valid novel over the onset delays (bench/onset.py) ({max(robust, key=robust.get)})" in report
    assert f"chosen by valid novel accuracy ({on_time})" in accuracy.markdown(results)


@pytest.mark.slow
def test_onset_bench_scores_runs_with_every_note_delayed(trained_run, data_dir, tmp_path):
    import onset

    from nsynth_keras.data.datasets import DataSpec
    from nsynth_keras.deploy.inference import load_classifier
    from nsynth_keras.reports.evaluation import predict_split, report

    out = tmp_path / "onset.json"
    result = onset.main([trained_run, "--delays", "0", "0.25", "--name", "one", "--data-dir", data_dir,
                         "--json", str(out)])
    y, _, probs, _ = predict_split(load_classifier(trained_run), DataSpec(data_dir=data_dir), "test")
    rows = result["splits"]["test"]
    assert rows["0"]["all"]["runs"] == [report(y, probs)["accuracy"]]
    assert {"all", "novel", "other_copies"} <= set(rows["0.25"]) and rows["0.25"]["all"]["std"] == 0
    assert json.load(open(out))["one"]["runs"] == [os.path.basename(trained_run)]
    runs = []
    for name in ("a-seed0", "b-seed0", "a-seed1"):
        os.symlink(trained_run, tmp_path / name)
        runs.append(str(tmp_path / name))
    result = onset.main([*runs, "--per-seed", "--delays", "0", "--data-dir", data_dir, "--json", str(out)])
    assert result["splits"]["test"]["0"]["all"]["runs"] == [report(y, probs)["accuracy"]] * 2  # one a seed
    with pytest.raises(SystemExit):
        onset.main([trained_run, "--delays", "4", "--data-dir", data_dir, "--json", str(out)])


@pytest.mark.slow
def test_predict_memory_bench_streams_long_recordings(tmp_path):
    import predict_memory

    assert predict_memory.main(["--quick", "--cache", str(tmp_path / "cache"), "--results", str(tmp_path)]) == 0
    cases = json.load(open(tmp_path / "predict_memory_quick.json"))["cases"]
    assert list(cases) == ["one 4 s note (the floor)", "1 x 1 min 16 kHz mono", "2 x 1 min 16 kHz mono"]
    assert all(c["exit_code"] == 0 and c["peak_rss_mib"] > 0 for c in cases.values())
    rows = (tmp_path / "cache" / "out.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 15  # the header, then every 4 s window of both one-minute files


@pytest.mark.slow
def test_server_bench_answers_every_request_and_closes_stalled_connections(tmp_path):
    from nsynth_keras.deploy.webpage import MEDIAPIPE_JS, WEB_DIR

    if not os.path.isdir(os.path.join(WEB_DIR, MEDIAPIPE_JS, "wasm")):
        pytest.skip("web/node_modules is missing: npm ci --prefix web (the browser extra)")
    import server

    assert server.main(["--quick", "--results", str(tmp_path)]) == 0
    result = json.load(open(tmp_path / "server_quick.json"))
    assert result["mixed"]["answered"] == result["mixed"]["requests"] == 100
    assert result["mixed"]["statuses"]["404"] > 0  # the listing and the missing path
    assert result["stalled"]["closed_by_server"] == result["stalled"]["connections"]


@pytest.mark.slow
def test_scale_bench_quick_measures_every_step(data_dir, tmp_path):
    import scale

    assert scale.main(["--data-dir", data_dir, "--quick", "--cache", str(tmp_path / "cache"),
                       "--results", str(tmp_path)]) == 0
    result = json.load(open(tmp_path / "scale_quick.json"))
    assert set(result["runs"]) == {"1000", "2000"} and result["render_notes_per_s"] > 0
    for size, run in result["runs"].items():
        assert run["train_notes"] > int(size) * 0.9 and run["train_peak_rss_mib"] > 0 and run["mel_cache_mib"] > 0
        assert run["first_epoch_s"] is not None and run["cached_epoch_s"] is not None  # parsed from Keras's log
    heldout = result["heldout"]
    rows = (tmp_path / "cache" / "predict.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + heldout["notes"] and heldout["evaluate_peak_rss_mib"] > 0
    assert heldout["tflite_check_notes"] == heldout["notes"] > heldout["tflite_check_few_notes"] > 0
    assert heldout["tflite_check_peak_rss_mib"] > 0 and 0 < heldout["accuracy"] <= 1
    workers = result["two_workers"]
    assert workers["size"] == 2000 and len(workers["first"]["peak_rss_mib_each"]) == 2
    assert workers["global_batch"] == 2 * workers["batch_per_worker"] == 64  # read from the run's config.json
    assert workers["first"]["notes"] > 2000 * 0.9 and workers["cached_epoch_vs_one_worker"] > 0
    for step in result["steps"]:  # the on-device check may find a 1-epoch model's int8 below its threshold
        assert step["exit_code"] in ((0, 1) if step["step"].startswith("on-device check") else (0,)), step


@pytest.mark.slow
def test_realism_bench_scores_every_kind_with_real_only_models(data_dir, tmp_path):
    import realism

    out = tmp_path / "realism.json"
    result = realism.main(["--data-dir", data_dir, "--max-examples", "60", "--seeds", "0", "--epochs", "1",
                           "--presets", "1", "--runs", str(tmp_path / "runs"), "--json", str(out), "--label", "quick"])
    assert set(result["kinds"]) == {kind for voices in VOICES.values() for kind in voices}
    assert "synth_lead" in result["not_measurable"]  # the shared subset's training split has no synth lead
    for kind in result["kinds"].values():
        assert kind["notes"] == 3 and sum(kind["named_as"].values()) == 3
        assert (kind["recognised"] is None) == (kind["family"] in result["not_measurable"])
        assert kind["recognised"] is None or 0 <= kind["recognised"] <= 1
    assert set(result["families"]) | set(result["not_measurable"]) == set(FAMILIES)
    assert json.load(open(out))["quick"]["models"] == ["real-only-seed0"]
    trained = os.path.getmtime(tmp_path / "runs" / "real-only-seed0" / "config.json")
    again = realism.main(["--data-dir", data_dir, "--max-examples", "60", "--seeds", "0", "--epochs", "1",
                          "--presets", "1", "--runs", str(tmp_path / "runs"), "--json", str(out), "--label", "again"])
    assert os.path.getmtime(tmp_path / "runs" / "real-only-seed0" / "config.json") == trained  # reused
    assert again["kinds"] == result["kinds"] and set(json.load(open(out))) == {"quick", "again"}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the oneDNN default is set on x86 CPUs only")
def test_a_user_can_turn_the_onednn_default_off(monkeypatch):
    """The package sets TF_ENABLE_ONEDNN_OPTS=1 only where the user has not set it (on: the speed bench test)."""
    import speed

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert "conv2d in a oneDNN convolution kernel: no" in speed.isa_in_use("keras", "native")
