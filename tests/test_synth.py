"""The procedural synthesizer: NSynth-format synthetic instruments, and fine-tuning that keeps their families."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nsynth_keras import render
from nsynth_keras.core.config import FAMILIES, NUM_SAMPLES, SAMPLE_RATE
from nsynth_keras.core.errors import DataError
from nsynth_keras.data.audio import read_wav
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.notes import read_examples
from nsynth_keras.learn.training import TrainConfig, train
from nsynth_keras.models.runs import load_keras
from nsynth_keras.reports.evaluation import evaluate
from nsynth_keras.sounds.rendering import RenderConfig, default_soundfont
from nsynth_keras.sounds.rendering import render as render_notes
from nsynth_keras.sounds.synth import PITCH_RANGES, VOICES, make_preset, render_note


@pytest.fixture(scope="module")
def synth_notes(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("synth"))
    render_notes(RenderConfig(out, synth=1, pitch_step=12, velocities=(60, 127)), log=lambda *a: None,
                 show_progress=False)
    return out


def test_every_kind_plays_a_finite_4_s_note_whose_level_follows_velocity():
    assert set(VOICES) == set(PITCH_RANGES) == set(FAMILIES) and all(VOICES.values())
    for family, voices in VOICES.items():
        kinds, (low, high) = tuple(voices), PITCH_RANGES[family]
        for i in range(len(kinds)):
            preset = make_preset(family, i, seed=3)
            assert preset.kind == kinds[i] and preset.name.startswith(f"{family}_synthetic_")
            assert "-" not in preset.name
            for pitch in (low, high):
                soft, loud = render_note(preset, pitch, 40), render_note(preset, pitch, 127)
                assert soft.shape == loud.shape == (NUM_SAMPLES,) and soft.dtype == np.float32
                assert np.isfinite(loud).all() and 0.5 < np.abs(loud).max() <= 0.9 + 1e-6, preset.name
                assert np.abs(soft).max() < np.abs(loud).max()
                # held 3 s, released over the last second: the end is far quieter than the held part
                held = np.sqrt(np.mean(loud[2 * SAMPLE_RATE : 3 * SAMPLE_RATE] ** 2))
                end = np.sqrt(np.mean(loud[-SAMPLE_RATE // 8 :] ** 2))
                assert end < 0.5 * held + 1e-4, (preset.name, pitch, end, held)


def test_notes_have_no_dc_and_struck_kinds_die_away():
    """What a real-only model heard as unreal: a driven guitar sitting on a DC offset (most of its energy below
    200 Hz for a 262 Hz note), FM bells and electric pianos held flat to the release."""
    freqs = np.fft.rfftfreq(NUM_SAMPLES, 1 / SAMPLE_RATE)
    for family, voices in VOICES.items():
        for i, kind in enumerate(voices):
            for index in (i, i + len(voices)):
                x = render_note(make_preset(family, index), 60, 100).astype(np.float64)
                assert abs(x.mean()) < 1e-3, (kind, x.mean())
                if kind == "drive_guitar":
                    power = np.abs(np.fft.rfft(x)) ** 2
                    assert power[freqs < 200].sum() < 0.05 * power.sum(), kind
                if kind in ("fm_bell", "fm_epiano"):
                    start, end = (np.sqrt(np.mean(x[int(t * SAMPLE_RATE) : int((t + 0.1) * SAMPLE_RATE)] ** 2))
                                  for t in (0.05, 2.85))
                    assert end < 0.7 * start, (kind, end, start)  # over 3 dB down before the release, not flat


def test_presets_are_seeded_and_differ_between_seeds():
    a, b = make_preset("synth_lead", 0, seed=0), make_preset("synth_lead", 0, seed=1)
    assert render_note(a, 60, 100).tobytes() == render_note(make_preset("synth_lead", 0, seed=0), 60, 100).tobytes()
    assert a.name != b.name and render_note(a, 60, 100).tobytes() != render_note(b, 60, 100).tobytes()


def test_synthesized_notes_read_back_as_synthetic_nsynth_notes_of_every_family(synth_notes):
    table = read_examples(synth_notes, "train")
    assert sorted({FAMILIES[f] for f in table.family}) == sorted(FAMILIES)
    assert set(table.source) == {2}  # synthetic
    examples = json.load(open(os.path.join(synth_notes, "nsynth-train", "examples.json")))
    meta = next(iter(examples.values()))
    assert meta["instrument_source_str"] == "synthetic" and meta["sample_rate"] == SAMPLE_RATE
    clip = read_wav(table.path[0])
    assert clip.fixups == [] and 0 < np.abs(clip.waveform).max() <= 0.99


def test_synth_render_is_byte_identical_for_a_seed_and_resumes(synth_notes, tmp_path, capsys):
    again = str(tmp_path / "again")
    render_notes(RenderConfig(again, synth=1, pitch_step=12, velocities=(60, 127)), log=lambda *a: None,
                 show_progress=False)
    audio = os.path.join("nsynth-train", "audio")
    names = sorted(os.listdir(os.path.join(synth_notes, audio)))
    assert names == sorted(os.listdir(os.path.join(again, audio)))
    for name in names[::7]:
        assert open(os.path.join(synth_notes, audio, name), "rb").read() == open(os.path.join(again, audio, name),
                                                                                 "rb").read()
    assert render.main(["--out", again, "--synth", "1", "--pitch-step", "12", "--velocities", "60", "127"]) == 0
    assert f"0 notes written, {len(names)} kept from an earlier run" in capsys.readouterr().out
    assert render.main(["--out", again, "--synth", "2", "--pitch-step", "12", "--velocities", "60", "127"]) == 2
    assert "rendered with other settings" in capsys.readouterr().err
    assert render.main(["--out", str(tmp_path / "x"), "--synth", "1", "--programs", "0"]) == 2
    assert "--synth renders synthesizer presets, not SoundFonts" in capsys.readouterr().err


def test_a_soundfont_can_be_marked_synthetic(tmp_path):
    summary = render_notes(RenderConfig(str(tmp_path), (default_soundfont(),), programs=(80,), pitch_step=24,
                                        velocities=(100,), source="synthetic"), log=lambda *a: None,
                           show_progress=False)
    table = read_examples(summary.folder.rsplit("nsynth-train", 1)[0], "train")
    assert set(table.source) == {2} and all("_synthetic_" in i for i in table.instrument)


@pytest.mark.slow
def test_fine_tuning_keeps_a_family_only_the_extra_notes_have(tiny_nsynth, tmp_path):
    """tiny_nsynth has no vocal note; vocal presets are pretrained on, and --finetune-extra keeps them in the
    fine-tuning batches, so the fine-tuned model still names held-out vocal presets (without it, it cannot)."""
    extra = str(tmp_path / "extra")
    render_notes(RenderConfig(extra, synth=3, families=("vocal",), pitch_step=4, velocities=(100,)),
                 log=lambda *a: None, show_progress=False)
    heldout = str(tmp_path / "heldout")
    render_notes(RenderConfig(heldout, synth=2, seed=5, split="valid", families=("vocal",), pitch_step=6,
                              velocities=(100,)), log=lambda *a: None, show_progress=False)
    spec = DataSpec(data_dir=tiny_nsynth, extra_train=(extra,))
    predicted = {}
    for keep in (0.0, 2.0):
        config = TrainConfig(epochs=12, pretrain_epochs=4, finetune_extra=keep, learning_rate=3e-3, batch_size=4,
                             out=str(tmp_path / "runs"), run_name=f"keep{keep}", tflite=False, mixed_precision="off")
        run = train(config, spec, log=lambda *a: None, verbose=0)
        report, _ = evaluate(run, DataSpec(data_dir=heldout), "valid", out=str(tmp_path))
        predicted[keep] = report["accuracy"]
    assert predicted[2.0] >= 0.4, predicted  # held-out vocal presets still called vocal (0.62 measured)
    assert predicted[0.0] <= predicted[2.0] - 0.3, predicted  # forgotten without (0.0 measured)


def test_finetune_learning_rate_is_a_fresh_optimizer_for_the_real_notes(tiny_nsynth, tmp_path):
    extra = str(tmp_path / "extra")
    render_notes(RenderConfig(extra, synth=1, families=("bass", "organ"), pitch_step=12, velocities=(100,)),
                 log=lambda *a: None, show_progress=False)
    spec = DataSpec(data_dir=tiny_nsynth, extra_train=(extra,))

    def weights(name: str, epochs: int, lr: float | None) -> list:
        config = TrainConfig(epochs=epochs, pretrain_epochs=2, finetune_learning_rate=lr, seed=3, deterministic=True,
                             batch_size=4, out=str(tmp_path / "runs"), run_name=name, tflite=False,
                             mixed_precision="off")
        run = train(config, spec, log=lambda *a: None, verbose=0)
        return load_keras(os.path.join(run, "model.keras")).get_weights()

    still = weights("still", 1, 1e-12)  # fine-tuning at a vanishing rate leaves the pretrained weights
    longer = weights("longer", 3, 1e-12)
    moved = weights("moved", 1, None)  # the pretraining optimizer carried on at --learning-rate
    assert all(np.allclose(a, b, atol=1e-8) for a, b in zip(still, longer))
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(still, moved))
    with pytest.raises(ValueError, match="--finetune-learning-rate goes with --pretrain-epochs"):
        TrainConfig(finetune_learning_rate=1e-4).validate()


def test_finetune_and_select_settings_are_checked(tiny_nsynth, tmp_path):
    with pytest.raises(ValueError, match="--finetune-extra goes with --pretrain-epochs"):
        TrainConfig(finetune_extra=0.5).validate()
    with pytest.raises(DataError, match="--select-extra folder .*nothing does not exist"):
        train(TrainConfig(epochs=1, out=str(tmp_path), run_name="s", tflite=False, mixed_precision="off"),
              DataSpec(data_dir=tiny_nsynth, select_extra=(str(tmp_path / "nothing"),)), log=lambda *a: None,
              verbose=0)


def test_a_selection_set_chooses_epochs_and_is_scored_apart(tiny_nsynth, tmp_path):
    heldout = str(tmp_path / "heldout")
    render_notes(RenderConfig(heldout, synth=1, seed=5, split="valid", families=("vocal", "synth_lead"), pitch_step=12,
                              velocities=(100,)), log=lambda *a: None, show_progress=False)
    run = train(TrainConfig(epochs=2, out=str(tmp_path / "runs"), run_name="sel", tflite=False,
                            mixed_precision="off"), DataSpec(data_dir=tiny_nsynth, select_extra=(heldout,)),
                log=lambda *a: None, verbose=0)
    config = json.load(open(os.path.join(run, "config.json")))
    held = len(read_examples(heldout, "valid"))
    assert config["notes"]["valid"] == 4 and config["notes"]["heldout"] == held
    assert config["notes"]["selection"] == 4 + held
    assert set(config["scores"]) == {"train", "valid", "test", "heldout_rendered"}
