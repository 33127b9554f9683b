"""Several runs as one model: their family probabilities averaged, saved as a run folder that every command reads
(evaluate, predict, export, tflite_check, web)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime

import keras

from nsynth_keras.core.config import FAMILIES
from nsynth_keras.core.files import atomic_path, read_json, write_json, write_labels
from nsynth_keras.models.runs import RunError, RunFolder, find_model, load_keras, package_versions, run_frontend


def average_models(members: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One Keras model whose output is the mean of the members' outputs (probabilities); the members keep their
    weights and are renamed member_0, member_1, ... (a model's layer names must be unique)."""
    if len(members) < 2:
        raise RunError(f"an ensemble needs at least two members, got {len(members)}")
    inputs = {tuple(m.input_shape[1:]) for m in members}
    outputs = {tuple(m.output_shape[1:]) for m in members}
    if len(inputs) != 1 or len(outputs) != 1:
        raise RunError("the members take or give differently shaped tensors: "
                       + ", ".join(f"{m.name} {m.input_shape} -> {m.output_shape}" for m in members))
    inputs = keras.Input(members[0].input_shape[1:], name="input")
    for i, member in enumerate(members):
        member.name = f"member_{i}"
    averaged = keras.layers.Average(name="mean_probabilities")([m(inputs) for m in members])
    return keras.Model(inputs, averaged, name=name)


def write_ensemble(runs: Sequence[str], dest: str, log=print) -> str:
    """Average the models of ``runs`` (run folders or .keras files) into the run folder ``dest``: model.keras,
    labels.txt and a config.json that records the members and the frontend they share. The folder appears whole
    or not at all; an existing one is replaced only once the new one is written."""
    paths = [find_model(run) for run in runs]
    frontends = {run: run_frontend(run)[0] for run in runs}
    if len(set(frontends.values())) != 1:
        raise RunError("the members were trained on different frontends and cannot share one input: "
                       + "; ".join(f"{run}: {f.to_json()}" for run, f in frontends.items()))
    model = average_models([load_keras(path) for path in paths])
    members = []
    for run, path in zip(runs, paths):
        config = RunFolder(os.path.dirname(path)).config
        record = read_json(config) if os.path.isfile(config) else {}
        members.append({"run": os.path.abspath(run), "settings": record.get("settings"), "data": record.get("data"),
                        "scores": record.get("scores")})
    with atomic_path(dest, folder=True) as tmp:
        os.makedirs(tmp)
        folder = RunFolder(tmp)
        model.save(folder.model)
        write_labels(folder.labels)
        write_json(folder.config, {
            "model": {"name": "ensemble", "params": model.count_params(), "members": len(members)},
            "frontend": next(iter(frontends.values())).to_json(),
            "families": list(FAMILIES),
            "ensemble": {"combine": "mean of the members' probabilities", "members": members},
            "versions": package_versions(),
            "created": datetime.now().isoformat(timespec="seconds"),
        })
    log(f"Wrote {dest}: {len(members)} members averaged, {model.count_params():,} parameters")
    return dest
