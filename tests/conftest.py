"""Shared fixtures: the real NSynth subset in ../shared and one short training run reused by many tests."""

from __future__ import annotations

import fcntl
import json
import os
import shutil

import pytest

from nsynth_keras.data.datasets import DataSpec
from nsynth_keras.data.notes import Filters
from nsynth_keras.learn.training import TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_NSYNTH = os.environ.get("NSYNTH_DATA_DIR", os.path.join(ROOT, "..", "shared", "nsynth"))


# The longest test files first: with one file per worker at a time (pytest-xdist --dist loadfile), a long file
# that starts last would keep one worker busy while the others wait at the end.
LONGEST_FIRST = ("test_web.py", "test_export.py", "test_safety.py", "test_reliability.py", "test_render.py",
                 "test_prepare.py", "test_outputs_and_overlap.py", "test_synth.py", "test_bench.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


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
def trained_run(data_dir, tmp_path_factory, worker_id) -> str:
    """A baseline trained by the train CLI on a small seeded sample of real notes. The first xdist worker to ask
    trains it once for the session; every worker gets its own copy (tests export into it)."""
    base = tmp_path_factory.getbasetemp()
    session = base.parent if worker_id != "master" else base  # the parent is this session's, shared by workers
    trained = session / "trained-run"
    with open(session / "trained-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (trained / "smoke" / "config.json").exists():
            # float32 whatever the CPU: the export thresholds below are checked on the same model everywhere.
            config = TrainConfig(epochs=3, out=str(trained), run_name="smoke", seed=1, mixed_precision="off")
            train(config, DataSpec(data_dir=data_dir, filters=Filters(max_examples=160)))
    run = tmp_path_factory.mktemp("runs") / "smoke"
    shutil.copytree(trained / "smoke", run)
    return str(run)


@pytest.fixture(scope="session")
def small_nsynth(data_dir, tmp_path_factory) -> str:
    """The shared subset cut down to a few real notes of each family per split, spread over its instruments
    (the wavs are links to the shared files): for tests about code paths, not about accuracy."""
    root = tmp_path_factory.mktemp("small-nsynth")
    for split, per_family in (("train", 12), ("valid", 4), ("test", 4)):
        with open(os.path.join(data_dir, f"nsynth-{split}", "examples.json")) as f:
            examples = json.load(f)
        by_instrument: dict[str, dict[str, list[str]]] = {}
        for key in sorted(examples):
            family, instrument = examples[key]["instrument_family_str"], examples[key]["instrument_str"]
            by_instrument.setdefault(family, {}).setdefault(instrument, []).append(key)
        chosen = []
        for instruments in by_instrument.values():  # round robin over the family's instruments
            queues = list(instruments.values())
            picked = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
            chosen += picked[:per_family]
        os.makedirs(root / f"nsynth-{split}" / "audio")
        for key in chosen:
            os.symlink(os.path.join(data_dir, f"nsynth-{split}", "audio", f"{key}.wav"),
                       root / f"nsynth-{split}" / "audio" / f"{key}.wav")
        with open(root / f"nsynth-{split}" / "examples.json", "w") as f:
            json.dump({key: examples[key] for key in chosen}, f)
    return str(root)


def write_split(root, split: str, notes: list[dict], *, seconds: float = 4.0) -> dict[str, str]:
    """Write a json/wav split (``root/nsynth-<split>/``) of sine notes; each note dict gives at least
    ``instrument`` and ``family`` (a name) and may give ``pitch``, ``velocity``, ``source`` and ``wave``.
    Returns {note_str: wav path}."""
    import numpy as np
    import soundfile as sf

    from nsynth_keras.core.config import FAMILIES, SAMPLE_RATE, SOURCES

    folder = os.path.join(str(root), f"nsynth-{split}")
    os.makedirs(os.path.join(folder, "audio"), exist_ok=True)
    examples, paths = {}, {}
    for i, n in enumerate(notes):
        pitch, velocity, source = n.get("pitch", 60 + i % 12), n.get("velocity", 100), n.get("source", "acoustic")
        key = f"{n['instrument']}-{pitch:03d}-{velocity:03d}"
        wave = n.get("wave")
        if wave is None:
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            wave = 0.5 * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t) * np.exp(-t * (1 + i % 5))
        paths[key] = os.path.join(folder, "audio", f"{key}.wav")
        sf.write(paths[key], np.asarray(wave, np.float32), SAMPLE_RATE, subtype="PCM_16")
        examples[key] = {"note_str": key, "instrument_str": n["instrument"], "pitch": pitch, "velocity": velocity,
                         "instrument_family": FAMILIES.index(n["family"]), "instrument_family_str": n["family"],
                         "instrument_source": SOURCES.index(source), "instrument_source_str": source}
    with open(os.path.join(folder, "examples.json"), "w", encoding="utf-8") as f:
        json.dump(examples, f)
    return paths


@pytest.fixture
def tiny_nsynth(tmp_path) -> str:
    """A json/wav folder of sine notes: 3 train, 2 valid and 2 test instruments, 2 notes each (no real data)."""
    root = tmp_path / "tiny"
    for split, instruments in (("train", ("bass_a", "organ_b", "flute_c")), ("valid", ("bass_d", "organ_e")),
                               ("test", ("bass_f", "flute_g"))):
        write_split(root, split, [{"instrument": name, "family": name.split("_")[0], "pitch": 48 + 7 * k + j}
                                  for k, name in enumerate(instruments) for j in range(2)])
    return str(root)


def read_or_named_error(path):
    """(header, clip) of a wav, or None when it is refused with an error that names the file."""
    from nsynth_keras.data.audio import AudioError, probe_wav, read_wav

    try:
        return probe_wav(str(path)), read_wav(str(path))
    except AudioError as err:
        assert str(path) in str(err)
        return None


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the distributed tests' chief)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
