"""Rendering NSynth-format notes from the SoundFont that ships with pretty-midi, and training on them."""

import json
import os
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from nsynth_keras import render, train
from nsynth_keras.core.config import FAMILIES, NUM_SAMPLES, SAMPLE_RATE
from nsynth_keras.core.errors import DataError, SettingsError
from nsynth_keras.data.audio import probe_wav
from nsynth_keras.data.datasets import DataSpec, make_dataset
from nsynth_keras.data.notes import Filters, read_examples
from nsynth_keras.sounds.rendering import PEAK_LIMIT, RenderConfig, load_program_map
from nsynth_keras.sounds.rendering import render as render_notes

# A piano, a violin and a trumpet, every octave, one velocity: a few seconds of rendering.
SMALL = ["--programs", "0", "40", "56", "--pitch-step", "12", "--velocities", "100"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    assert render.main(["--out", str(out), *SMALL]) == 0
    return str(out)


def test_rendered_notes_read_back_like_nsynth(rendered):
    examples = json.load(open(os.path.join(rendered, "nsynth-train", "examples.json")))
    families = Counter(m["instrument_family_str"] for m in examples.values())
    assert set(families) == {"keyboard", "string", "brass"}
    assert len({m["instrument_str"] for m in examples.values()}) == 3
    for note, m in examples.items():
        assert note == m["note_str"] == f"{m['instrument_str']}-{m['pitch']:03d}-{m['velocity']:03d}"
        assert FAMILIES[m["instrument_family"]] == m["instrument_family_str"] and m["sample_rate"] == SAMPLE_RATE
        assert m["qualities"] == [0] * 10 and m["qualities_str"] == [] and m["velocity"] == 100
    violin = [m["pitch"] for m in examples.values() if m["instrument_family_str"] == "string"]
    assert min(violin) >= 55 and max(violin) <= 100  # inside the violin's range from the map
    table = read_examples(rendered, "train", strict=True)
    assert len(table) == len(examples) and all(table.standard)  # 16 kHz mono PCM16: TF's fast path
    for path in table.path[:5]:
        wave, rate = sf.read(path, dtype="float32")
        assert rate == SAMPLE_RATE and wave.shape == (NUM_SAMPLES,)
        assert 1e-3 < np.abs(wave).max() <= PEAK_LIMIT + 1e-4  # audible, never clipped
        assert probe_wav(path).channels == 1
    for ex in make_dataset(DataSpec(data_dir=rendered), "train").dataset.take(3):
        assert ex["audio"].shape == (NUM_SAMPLES,) and FAMILIES[int(ex["family"])] in families


def test_rendering_is_deterministic_and_resumes_or_refuses(rendered, tmp_path, capsys):
    again = tmp_path / "again"
    assert render.main(["--out", str(again), *SMALL]) == 0
    a, b = (os.path.join(d, "nsynth-train") for d in (rendered, str(again)))
    assert open(os.path.join(a, "examples.json")).read() == open(os.path.join(b, "examples.json")).read()
    for name in sorted(os.listdir(os.path.join(a, "audio")))[:5]:
        assert open(os.path.join(a, "audio", name), "rb").read() == open(os.path.join(b, "audio", name), "rb").read()
    capsys.readouterr()
    # The same command again keeps every note; other settings are refused; so is a folder render did not write.
    assert render.main(["--out", str(again), *SMALL]) == 0
    assert "0 notes written" in capsys.readouterr().out
    assert render.main(["--out", str(again), *SMALL[:-1], "50"]) == 2
    assert "rendered with other settings" in capsys.readouterr().err
    real = tmp_path / "real"
    (real / "nsynth-train").mkdir(parents=True)
    (real / "nsynth-train" / "examples.json").write_text("{}")
    assert render.main(["--out", str(real), *SMALL]) == 2
    assert "not written by render" in capsys.readouterr().err


def test_program_map_is_validated_line_by_line(tmp_path):
    default = load_program_map()  # the General MIDI map covers every NSynth family
    assert {m.family for m in default.values()} == set(FAMILIES) and default[40].family == "string"
    bad = tmp_path / "map.csv"
    bad.write_text("# comment\n0,keyboard,acoustic,21,108\n40,violins,acoustic,55,100\n")
    with pytest.raises(DataError, match=r"map.csv line 3: unknown family 'violins'"):
        load_program_map(str(bad))
    for text, message in (("0,keyboard,acoustic\n", "line 1: expected"), ("200,bass,acoustic,1,2\n", "not 0..127"),
                          ("1,bass,analog,1,2\n", "unknown source"), ("1,bass,acoustic,60,40\n", "pitch range"),
                          ("1,bass,acoustic,1,2\n1,bass,acoustic,1,2\n", "listed twice")):
        bad.write_text(text)
        with pytest.raises(DataError, match=message):
            load_program_map(str(bad))


def test_bad_soundfont_paths_and_files_are_one_clear_error(tmp_path, capsys):
    assert render.main(["--out", str(tmp_path / "a"), "--soundfont", str(tmp_path / "missing.sf2")]) == 2
    assert "missing.sf2: file not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.sf2"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00sfbk" + b"\x00" * 100)
    assert render.main(["--out", str(tmp_path / "b"), "--soundfont", str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert "corrupt.sf2: cannot load it" in err and err.count("\n") == 1


def test_extra_notes_reach_the_train_split_only(rendered, data_dir):
    spec = DataSpec(data_dir=data_dir, extra_train=(rendered,))
    rendered_notes = set(json.load(open(os.path.join(rendered, "nsynth-train", "examples.json"))))
    real_train = make_dataset(DataSpec(data_dir=data_dir), "train")
    mixed = make_dataset(spec, "train")
    assert mixed.num_examples == real_train.num_examples + len(rendered_notes)
    assert mixed.parts == {os.path.abspath(data_dir): real_train.num_examples,
                           os.path.abspath(rendered): len(rendered_notes)}
    for split in ("valid", "test"):
        data = make_dataset(spec, split)
        notes = {n.decode() for n in data.dataset.map(lambda e: e["note"]).as_numpy_iterator()}
        assert not notes & rendered_notes and data.parts == {os.path.abspath(data_dir): data.num_examples}
    assert make_dataset(spec, "train", part="extra").num_examples == len(rendered_notes)
    assert make_dataset(spec, "train", part="real").num_examples == real_train.num_examples
    # A ratio caps the extra notes; balance samples them evenly over families.
    few = make_dataset(DataSpec(data_dir=data_dir, filters=Filters(max_examples=20), extra_train=(rendered,),
                                extra_ratio=0.5), "train")
    assert few.parts[os.path.abspath(rendered)] == 10
    even = make_dataset(DataSpec(data_dir=data_dir, extra_train=(rendered,), extra_balance=True,
                                 extra_ratio=6 / real_train.num_examples), "train", part="extra")
    assert sorted(Counter(FAMILIES[f] for f in even.families).values()) == [2, 2, 2]


@pytest.mark.slow
def test_train_mixes_and_pretrains_on_rendered_notes(rendered, data_dir, tmp_path):
    common = ["--data-dir", data_dir, "--max-examples", "40", "--epochs", "1", "--out", str(tmp_path), "--no-tflite",
              "--extra-train", rendered]
    n_rendered = len(json.load(open(os.path.join(rendered, "nsynth-train", "examples.json"))))
    assert train.main([*common, "--run-name", "mixed"]) == 0
    cfg = json.load(open(tmp_path / "mixed" / "config.json"))
    assert cfg["data"]["extra_train"] == [os.path.abspath(rendered)]
    assert cfg["train_notes_by_folder"] == {os.path.abspath(data_dir): 40, os.path.abspath(rendered): n_rendered}
    assert cfg["notes"]["train"] == 40 + n_rendered and cfg["notes"]["valid"] == 40
    assert train.main([*common, "--run-name", "pretrained", "--pretrain-epochs", "1"]) == 0
    cfg = json.load(open(tmp_path / "pretrained" / "config.json"))
    assert cfg["notes"]["train"] == 40  # fine-tuned on the real notes; the rendered ones only pretrained
    assert cfg["train_notes_by_folder"][f"{os.path.abspath(rendered)} (pretraining)"] == n_rendered
    assert "pretrained.weights.h5" not in os.listdir(tmp_path / "pretrained")


def test_render_config_validation(tmp_path):
    for fields, message in (({"pitch_step": 0}, "--pitch-step"), ({"velocities": (0,)}, "--velocities"),
                            ({"split": "dev"}, "--split")):
        with pytest.raises(SettingsError, match=message):
            render_notes(RenderConfig(str(tmp_path), **fields))


def test_a_variation_bank_renders_its_presets_as_instruments_of_their_own(rendered, tmp_path, monkeypatch):
    """TimGM6mb has no variation bank, so this one pretends bank 8 holds a second piano (its bank 0 preset): the
    plan, the names, the pitches and the bank that reaches the player are what is checked."""
    from nsynth_keras.sounds import rendering

    selected = []

    class WithBank8(rendering.tinysoundfont.Synth):
        def sfpreset_name(self, sfid, bank, program):
            return super().sfpreset_name(sfid, 0, program) if bank == 8 and program == 0 else \
                super().sfpreset_name(sfid, bank, program)

        def program_select(self, channel, sfid, bank, program, *args):
            selected.append((bank, program))
            return super().program_select(channel, sfid, 0, program, *args)

    monkeypatch.setattr(rendering.tinysoundfont, "Synth", WithBank8)
    out = tmp_path / "banks"
    assert render.main(["--out", str(out), *SMALL, "--banks", "0", "8"]) == 0
    examples = json.load(open(os.path.join(out, "nsynth-train", "examples.json")))
    base = json.load(open(os.path.join(rendered, "nsynth-train", "examples.json")))
    instruments = {m["instrument_str"] for m in examples.values()}
    plain = {m["instrument_str"] for m in base.values()}
    piano = next(i for i in plain if i.startswith("keyboard"))
    assert instruments == plain | {piano + "b8"}  # bank 0 keeps its names; the violin and trumpet have no bank 8
    assert {k: v for k, v in examples.items() if not k.startswith(piano + "b8")}.keys() == base.keys()
    assert {b for b, _ in selected} == {0, 8} and all(p == 0 for b, p in selected if b == 8)
    assert len([n for n in examples if n.startswith(piano + "b8")]) >= 3  # its own pitches, every octave
    record = json.load(open(os.path.join(out, "nsynth-train", "render.json")))
    assert record["banks"] == [0, 8] and "banks" not in json.load(
        open(os.path.join(rendered, "nsynth-train", "render.json")))  # General MIDI only: the record as before
    with pytest.raises(SettingsError, match="--banks lists a bank twice"):
        render_notes(RenderConfig(str(tmp_path / "x"), banks=(8, 8)))
    with pytest.raises(SettingsError, match="--banks"):
        render_notes(RenderConfig(str(tmp_path / "y"), synth=2, banks=(8,)))
