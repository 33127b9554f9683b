"""Flags generated from the config dataclasses: one declaration per setting, a lossless round trip,
overrides that are exactly the flags given, and --config that reruns a run."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from nsynth_keras import train, tune
from nsynth_keras.core.settings import flag_fields, flag_name, given
from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.notes import Filters
from nsynth_keras.learn.training import TrainConfig
from nsynth_keras.learn.tuning import SearchConfig

# A value other than the default for every TrainConfig flag (a new field without one fails the test).
OTHER = {"model": "cnn", "filters": (8, 16), "kernel_size": 5, "padding": "valid", "strides": 2, "dropout": 0.25,
         "dense_units": 64, "batch_norm": True, "global_pool": True, "weight_decay": 1e-4, "epochs": 7,
         "pretrain_epochs": 2, "finetune_extra": 0.5, "batch_size": 16, "learning_rate": 3e-4,
         "lr_schedule": "cosine", "augment": ("shift", "mixup"), "label_smoothing": 0.1, "class_weight": True,
         "early_stopping": 3, "seed": 4, "deterministic": True, "mixed_precision": "bf16", "strategy": "mirrored",
         "out": "elsewhere", "run_name": "r1", "overwrite": True, "cache_dir": "cache", "tflite": False,
         "recording_chain": 0.5, "onset_delay": 0.25, "steps_per_execution": 8, "frontend": "pcen",
         "select_on": "novel", "finetune_learning_rate": 1e-4, "ema": 0.99}


def argv_of(values: dict, cls) -> list[str]:
    """The command line that sets these fields (the inverse of parsing, for the round trip)."""
    argv = []
    fields = {f.name: f for f in flag_fields(cls)}
    for name, value in values.items():
        f = fields[name]
        if isinstance(value, bool):
            argv.append(flag_name(f) if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, tuple):
            argv += [flag_name(f), *map(str, value)]
        else:
            argv += [flag_name(f), str(value)]
    return argv


def test_every_train_setting_is_a_flag_and_round_trips():
    assert sorted(OTHER) == sorted(f.name for f in flag_fields(TrainConfig))
    args = train.build_parser().parse_args(argv_of(OTHER, TrainConfig))
    config = dataclasses.replace(TrainConfig(), **given(args, TrainConfig))
    assert config == TrainConfig(**OTHER)
    assert given(train.build_parser().parse_args([]), TrainConfig) == {}  # nothing given, nothing overridden


def test_data_flags_round_trip_onto_a_base_spec():
    base = DataSpec(data_dir="somewhere", extra_train=("x",), filters=Filters(pitch_min=30, max_examples=5))
    args = train.build_parser().parse_args(["--pitch-max", "90", "--instrument-source", "acoustic", "synthetic",
                                            "--extra-ratio", "0.5", "--drop-overlap"])
    spec = train.spec_from_args(args, base)
    assert spec == dataclasses.replace(base, extra_ratio=0.5, drop_overlap=True,
                                       filters=Filters(("acoustic", "synthetic"), 30, 90, 5))


def test_help_shows_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in flag_fields(TrainConfig):
        assert flag_name(f) in text or "--no-" + f.name.replace("_", "-") in text
    assert "--learning-rate LEARNING_RATE Adam learning rate (default: 0.001)" in text
    assert "choose from specaugment, gain, shift, mel_roll, tilt, mixup (default: none)" in text


@pytest.mark.parametrize("flag,value", [("--learning-rate", "nan"), ("--learning-rate", "0"), ("--epochs", "0"),
                                        ("--dropout", "-0.1"), ("--max-examples", "0"), ("--finetune-extra", "inf")])
def test_numbers_are_checked_where_they_are_parsed(flag, value, capsys):
    with pytest.raises(SystemExit):
        train.main([flag, value])
    assert f"argument {flag}" in capsys.readouterr().err


def test_config_json_reruns_a_run_and_flags_override(tiny_nsynth, tmp_path):
    out = str(tmp_path / "runs")
    assert train.main(["--data-dir", tiny_nsynth, "--out", out, "--run-name", "a", "--epochs", "2", "--model", "cnn",
                       "--filters", "8", "16", "--dropout", "0.2", "--no-tflite", "--mixed-precision", "off",
                       "--max-examples", "4"]) == 0
    first = json.load(open(os.path.join(out, "a", "config.json")))
    assert train.main(["--config", os.path.join(out, "a", "config.json"), "--run-name", "b", "--epochs", "1"]) == 0
    second = json.load(open(os.path.join(out, "b", "config.json")))
    changed = {k for k in first["settings"] if first["settings"][k] != second["settings"][k]}
    assert changed == {"run_name", "epochs"}
    assert second["data"] == first["data"]


def test_config_that_is_not_a_run_config_is_one_error(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"settings": {"epochs": 2, "colour": "red"}, "data": {}}))
    assert train.main(["--config", str(path)]) == 2
    assert f"--config {path}: settings: unknown settings colour" in capsys.readouterr().err


def test_search_settings_are_flags_too():
    args = tune.build_parser().parse_args(["--max-trials", "3", "--patience", "1", "--project", "p"])
    assert dataclasses.replace(SearchConfig(), **given(args, SearchConfig)) == SearchConfig("p", max_trials=3,
                                                                                            patience=1)
    assert set(SearchConfig.RETRAINING) <= {f.name for f in flag_fields(SearchConfig)}
