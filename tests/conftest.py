"""Shared fixtures: the real NSynth subset in ../shared and one short training run reused by many tests."""

from __future__ import annotations

import json
import os

import pytest

from nsynth_keras.data import DataSpec, Filters
from nsynth_keras.training import TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_NSYNTH = os.environ.get("NSYNTH_DATA_DIR", os.path.join(ROOT, "..", "shared", "nsynth"))


def _have_data() -> bool:
    return os.path.isfile(os.path.join(SHARED_NSYNTH, "nsynth-train", "examples.json"))


@pytest.fixture(scope="session")
def data_dir() -> str:
    if not _have_data():
        pytest.skip(f"real NSynth subset not found at {SHARED_NSYNTH} "
                    "(set NSYNTH_DATA_DIR or put ../shared beside the repo)")
    return SHARED_NSYNTH


@pytest.fixture(scope="session")
def examples(data_dir) -> dict:
    with open(os.path.join(data_dir, "nsynth-train", "examples.json")) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def real_wav(data_dir, examples) -> str:
    """A real guitar note."""
    key = next(k for k, v in examples.items() if v["instrument_family_str"] == "guitar")
    return os.path.join(data_dir, "nsynth-train", "audio", f"{key}.wav")


@pytest.fixture(scope="session")
def trained_run(data_dir, tmp_path_factory) -> str:
    """A baseline trained by the train CLI on a small seeded sample of real notes."""
    out = tmp_path_factory.mktemp("runs")
    # float32 whatever the CPU: the export thresholds below are checked on the same model everywhere.
    config = TrainConfig(epochs=3, out=str(out), run_name="smoke", seed=1, mixed_precision="off")
    return train(config, DataSpec(data_dir=data_dir, filters=Filters(max_examples=160)))
