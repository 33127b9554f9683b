"""Several runs as one model: their family probabilities averaged, saved as a run folder that every command reads
(evaluate, predict, export, tflite_check, web). Members of one frontend share a log-mel input; members of different
frontends (log-mel and PCEN, say) are joined at the waveform, each with its own frontend inside."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime

import keras

from nsynth_keras.core.config import FAMILIES, NUM_SAMPLES
from nsynth_keras.core.files import atomic_path, read_json, write_json, write_labels
from nsynth_keras.data.features import Frontend, LogMel
from nsynth_keras.models.runs import (
    RunError,
    RunFolder,
    find_model,
    load_keras,
    package_versions,
    run_frontend,
    takes_waveform,
)


def average_models(members: Sequence[keras.Model], frontends: Sequence[Frontend] | None = None,
                   name: str = "ensemble") -> keras.Model:
    """One Keras model whose output is the mean of the members' outputs (probabilities); the members keep their
    weights and are renamed member_0, member_1, ... (a model's layer names must be unique). With ``frontends`` that
    differ, the model takes 16 kHz audio [batch, 64000] and feeds each member its own frontend's features."""
    if len(members) < 2:
        raise RunError(f"an ensemble needs at least two members, got {len(members)}")
    inputs = {tuple(m.input_shape[1:]) for m in members}
    outputs = {tuple(m.output_shape[1:]) for m in members}
    if len(inputs) != 1 or len(outputs) != 1:
        raise RunError("the members take or give differently shaped tensors: "
                       + ", ".join(f"{m.name} {m.input_shape} -> {m.output_shape}" for m in members))
    for i, member in enumerate(members):
        member.name = f"member_{i}"
    if frontends is not None and len(set(frontends)) > 1:
        audio = keras.Input((NUM_SAMPLES,), name="waveform")
        features = {}  # one frontend layer for the members that share it: computed once a clip
        for f in frontends:
            if f not in features:
                features[f] = LogMel(f.to_json(), name=f"frontend_{len(features)}")(audio)
        scores = [m(features[f]) for m, f in zip(members, frontends)]
    else:
        audio = keras.Input(members[0].input_shape[1:], name="input")
        scores = [m(audio) for m in members]
    return keras.Model(audio, keras.layers.Average(name="mean_probabilities")(scores), name=name)


def write_ensemble(runs: Sequence[str], dest: str, log=print) -> str:
    """Average the models of ``runs`` (run folders or .keras files) into the run folder ``dest``: model.keras,
    labels.txt and a config.json that records the members (settings, scores, frontend) and the model's input. The
    folder appears whole or not at all; an existing one is replaced only once the new one is written."""
    paths = [find_model(run) for run in runs]
    frontends = [run_frontend(run)[0] for run in runs]
    model = average_models([load_keras(path) for path in paths], frontends)
    members = []
    for run, path, frontend in zip(runs, paths, frontends):
        config = RunFolder(os.path.dirname(path)).config
        record = read_json(config) if os.path.isfile(config) else {}
        members.append({"run": os.path.abspath(run), "frontend": frontend.to_json(), "settings": record.get("settings"),
                        "data": record.get("data"), "scores": record.get("scores")})
    waveform = takes_waveform(model)
    with atomic_path(dest, folder=True) as tmp:
        os.makedirs(tmp)
        folder = RunFolder(tmp)
        model.save(folder.model)
        write_labels(folder.labels)
        write_json(folder.config, {
            "model": {"name": "ensemble", "params": model.count_params(), "members": len(members),
                      "input": "16 kHz audio, each member's frontend inside" if waveform else "features"},
            # A waveform ensemble computes its features inside: no frontend for the readers to apply.
            **({} if waveform else {"frontend": frontends[0].to_json()}),
            "families": list(FAMILIES),
            "ensemble": {"combine": "mean of the members' probabilities", "members": members},
            "versions": package_versions(),
            "created": datetime.now().isoformat(timespec="seconds"),
        })
    log(f"Wrote {dest}: {len(members)} members averaged, {model.count_params():,} parameters"
        + (" (different frontends: it takes 16 kHz audio)" if waveform else ""))
    return dest
