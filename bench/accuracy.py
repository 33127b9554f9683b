"""Accuracy benchmark on instruments the model has never heard: the homework baseline, the best
real-only configuration, and configurations that add notes rendered from SoundFonts; 3 seeds each,
the best-on-valid checkpoint scored on valid and test (unseen instruments) with the evaluate code.

    python bench/accuracy.py                                      # every configuration, seeds 0 1 2
    python bench/accuracy.py --only wide+augment+3sf --seeds 0 --keep /tmp/runs   # reproduce one row
    python bench/accuracy.py --quick                              # smoke run: 1 seed, 1 epoch, few notes

Rendered notes are data: they go to --render-cache (default ~/.cache/nsynth-keras/rendered), outside
the repository, rendered once and reused. Configurations that need a SoundFont that is not
installed (the Debian packages fluid-soundfont-gm and musescore-general-soundfont) are skipped with
the reason. Results accumulate in bench/results/accuracy.json (a run replaces only the runs of the seeds
it ran) and bench/results/accuracy.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from onset import over_delays, seed_count  # noqa: E402  (bench/, this script's folder)

from nsynth_keras.cli import add_data_args, spec_from_args  # noqa: E402
from nsynth_keras.core.config import FAMILIES, SOURCES  # noqa: E402
from nsynth_keras.core.files import read_json, write_json  # noqa: E402
from nsynth_keras.data.datasets import DataSpec  # noqa: E402
from nsynth_keras.data.features import ONSET_DELAY_SHARE, PCEN_COMPRESSIONS  # noqa: E402
from nsynth_keras.data.notes import JsonWavLayout
from nsynth_keras.learn.training import TrainConfig, train  # noqa: E402
from nsynth_keras.reports.evaluation import SCORED_PARTS, evaluate  # noqa: E402
from nsynth_keras.sounds.rendering import RenderConfig, default_soundfont, render  # noqa: E402

AUGMENT = ("specaugment", "gain", "shift", "mel_roll", "mixup")
AUGMENT_PCEN = tuple(a for a in AUGMENT if a != "gain")  # gain adds decibels: PCEN features are not in dB
WIDE = {"model": "cnn", "filters": (32, 64, 128, 256), "dropout": 0.3}
# SoundFonts to render: name -> path (None: the default, TimGM6mb from pretty-midi). Every one is
# rendered the same way: every 4th pitch of each instrument's range at velocities 75 and 127.
SOUNDFONTS = {
    "timgm6mb": None,
    "fluidr3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "musescore": "/usr/share/sounds/sf3/MuseScore_General.sf3",
    "csound": "/usr/share/sounds/sf2/sf_GMbank.sf2",  # Debian csound-soundfont
    "opl3": "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2",  # Debian opl3-soundfont: FM synthesis, all synthetic
}
# Variation banks of the same SoundFonts (render --banks), each preset an instrument of its own: name -> (the
# SoundFont's name above, banks). MuseScore's expression banks (17, 18, 21, ...) are left out: the same samples.
VARIATIONS = {
    "fluidr3-var": ("fluidr3", (8, 16)),
    "musescore-var": ("musescore", (8, 16, 20, 25, 30, 40, 50)),
    "csound-var": ("csound", (8, 16)),
}
SF3 = ("timgm6mb", "fluidr3", "musescore")
SF5 = (*SF3, "csound", "opl3")
SYNTHETIC_SOUNDFONTS = ("opl3",)  # rendered with instrument_source synthetic, whatever the GM map says
RENDER = {"pitch_step": 4, "velocities": (75, 127)}
# Procedural synthesizer sets (nsynth_keras/sounds/synth.py): name -> RenderConfig fields. "synth-heldout" are other
# presets (another seed), in a valid split: the selection set's rendered part and the synth_lead recall check.
SYNTH_SETS = {
    "synth": {"synth": 16, "seed": 0, "split": "train", **RENDER},
    "synth-heldout": {"synth": 4, "seed": 1, "split": "valid", "pitch_step": 8, "velocities": (100,)},
}
HELDOUT = "synth-heldout"
# name -> (TrainConfig fields, rendered sets mixed in, extra DataSpec fields)
CONFIGS = {
    "baseline": ({}, (), {}),
    # The best real-only configuration of the earlier bench (32-64-128-256, Dropout 0.3, every augmentation).
    "wide+augment": ({**WIDE, "augment": AUGMENT}, (), {}),
    "baseline+timgm6mb": ({}, ("timgm6mb",), {}),
    # The PCEN frontend instead of the log-mel (an automatic gain per mel band).
    "baseline+pcen": ({"frontend": "pcen"}, (), {}),
    "wide+augment+pcen": ({**WIDE, "augment": AUGMENT_PCEN, "frontend": "pcen"}, (), {}),
    # The homework CNN on the log-mel, pretrained on the rendered instruments first (the next row's twin) ...
    "baseline+5sf+synth-pretrain": ({"pretrain_epochs": 10}, (*SF5, "synth"), {}),
    # The homework CNN on PCEN, pretrained on the rendered instruments first ...
    "baseline+5sf+synth-pretrain+pcen": ({"pretrain_epochs": 10, "frontend": "pcen"}, (*SF5, "synth"), {}),
    # ... without the synthesizer's instruments (its leave-one-source-out run scored higher on test without them)
    "baseline+5sf-pretrain+pcen": ({"pretrain_epochs": 10, "frontend": "pcen"}, SF5, {}),
    # ... with the best epoch chosen on the novel valid notes only
    "baseline+5sf+synth-pretrain+pcen+novelsel": ({"pretrain_epochs": 10, "frontend": "pcen", "select_on": "novel"},
                                                  (*SF5, "synth"), {}),
    # ... fine-tuned by a fresh Adam at a tenth of the learning rate
    "baseline+5sf+synth-pretrain+pcen+ftlr": ({"pretrain_epochs": 10, "frontend": "pcen",
                                              "finetune_learning_rate": 1e-4}, (*SF5, "synth"), {}),
    # ... with the variation banks as 89 more instruments in pretraining
    "baseline+5sf+var+synth-pretrain+pcen": ({"pretrain_epochs": 10, "frontend": "pcen"},
                                             (*SF5, *VARIATIONS, "synth"), {}),
    # ... with the augmentations that suit PCEN (SpecAugment, shifts, mel roll, mixup)
    "baseline+augment+5sf+synth-pretrain+pcen": ({"pretrain_epochs": 10, "frontend": "pcen", "augment": AUGMENT_PCEN},
                                                 (*SF5, "synth"), {}),
    # ... with the recording chain on half the notes of both stages
    "baseline+5sf+synth-pretrain+pcen+chain": ({"pretrain_epochs": 10, "frontend": "pcen", "recording_chain": 0.5},
                                               (*SF5, "synth"), {}),
    # ... and half the notes moved later by up to 0.5 s (waveform, before PCEN; the steady-state start of its
    # smoother makes a note at frame 0 look unlike the same note delayed)
    "baseline+5sf+synth-pretrain+pcen+chain+onset": ({"pretrain_epochs": 10, "frontend": "pcen", "recording_chain": 0.5,
                                                     "onset_delay": 0.5}, (*SF5, "synth"), {}),
    # ... on PCEN with its smoother started from silence (the same features for a note and the note delayed, near
    # enough) and the cheap, cached shift of the features instead
    "baseline+shift+5sf+synth-pretrain+pcen-onset": ({"pretrain_epochs": 10, "frontend": "pcen-onset",
                                                      "augment": ("shift",)}, (*SF5, "synth"), {}),
    # ... and the chain and the onset delay on the waveforms instead (a delay between frames too)
    "baseline+5sf+synth-pretrain+pcen-onset+chain+onset": ({"pretrain_epochs": 10, "frontend": "pcen-onset",
                                                           "recording_chain": 0.5, "onset_delay": 0.5},
                                                          (*SF5, "synth"), {}),
    # ... with the weights' moving average (momentum 0.99) validated, chosen and kept
    "baseline+5sf+synth-pretrain+pcen+chain+onset+ema": ({"pretrain_epochs": 10, "frontend": "pcen",
                                                         "recording_chain": 0.5, "onset_delay": 0.5, "ema": 0.99},
                                                        (*SF5, "synth"), {}),
    # ... with the variation banks as 89 more instruments in pretraining (they paid on PCEN without the chain)
    "baseline+5sf+var+synth-pretrain+pcen+chain+onset+ema": ({"pretrain_epochs": 10, "frontend": "pcen",
                                                             "recording_chain": 0.5, "onset_delay": 0.5, "ema": 0.99},
                                                            (*SF5, *VARIATIONS, "synth"), {}),
    # ... keeping half a rendered note per real note through fine-tuning: every family x source the real notes lack
    # (electric pianos, synth basses, electric guitars) stays in the batches (it cost test: README "Other copies")
    "baseline+5sf+synth-pretrain+pcen+chain+onset+ema+keep": ({"pretrain_epochs": 10, "frontend": "pcen",
                                                              "recording_chain": 0.5, "onset_delay": 0.5, "ema": 0.99,
                                                              "finetune_extra": 0.5}, (*SF5, "synth"), {}),
    # ... with the recording chain on every note of both stages
    "baseline+5sf+synth-pretrain+pcen+chain1": ({"pretrain_epochs": 10, "frontend": "pcen", "recording_chain": 1.0},
                                                (*SF5, "synth"), {}),
    # The recording chain (EQ, filters, room, noise) on half the training notes, drawn anew each epoch.
    "baseline+chain": ({"recording_chain": 0.5}, (), {}),
    "baseline+timgm6mb+chain": ({"recording_chain": 0.5}, ("timgm6mb",), {}),
    # The synthesizer's 16 presets per family mixed in: what its realism fixes change, at a baseline's cost.
    "baseline+synth": ({}, ("synth",), {}),
    "wide+augment+timgm6mb": ({**WIDE, "augment": AUGMENT}, ("timgm6mb",), {}),
    "wide+augment+3sf": ({**WIDE, "augment": AUGMENT}, SF3, {}),
    "wide+augment+3sf-pretrain": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10}, SF3, {}),
    "wide+augment+5sf": ({**WIDE, "augment": AUGMENT}, SF5, {}),
    "wide+augment+5sf-pretrain": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10}, SF5, {}),
    "wide+augment+5sf-balanced": ({**WIDE, "augment": AUGMENT}, SF5, {"extra_balance": True}),
    # Synthesized instruments beside the SoundFonts in pretraining ...
    "wide+augment+5sf+synth-pretrain": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10}, (*SF5, "synth"), {}),
    # ... with the weights' moving average (momentum 0.99) validated, chosen and kept: a seed ensemble's gain in one
    # model, if it carries over
    "wide+augment+5sf+synth-pretrain+ema": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10, "ema": 0.99},
                                            (*SF5, "synth"), {}),
    # ... with the recording chain on half the notes of both stages (the lever that paid most on the baseline)
    "wide+augment+5sf+synth-pretrain+chain": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10,
                                               "recording_chain": 0.5}, (*SF5, "synth"), {}),
    # ... on the PCEN frontend
    "wide+augment+5sf+synth-pretrain+pcen": ({**WIDE, "augment": AUGMENT_PCEN, "pretrain_epochs": 10,
                                             "frontend": "pcen"}, (*SF5, "synth"), {}),
    # ... on pcen-onset, where the feature shift of the augmentations is a delay of the note (near enough)
    "wide+augment+5sf+synth-pretrain+pcen-onset": ({**WIDE, "augment": AUGMENT_PCEN, "pretrain_epochs": 10,
                                                   "frontend": "pcen-onset"}, (*SF5, "synth"), {}),
    # ... and the recording chain on half the notes (the PCEN member of the chosen ensemble, with the chain)
    "wide+augment+5sf+synth-pretrain+pcen+chain": ({**WIDE, "augment": AUGMENT_PCEN, "pretrain_epochs": 10,
                                                   "frontend": "pcen", "recording_chain": 0.5}, (*SF5, "synth"), {}),
    # ... with a random spectral tilt of the log-mels (the real training notes are all velocity 100; most test notes
    # of the other copies are not)
    "wide+augment+5sf+synth-pretrain+tilt": ({**WIDE, "augment": (*AUGMENT, "tilt"), "pretrain_epochs": 10},
                                             (*SF5, "synth"), {}),
    # ... and keeping every family through fine-tuning: half an extra note per real note in the fine-tuning
    # batches, the best epoch chosen on real valid + held-out synthesized instruments (all 11 families).
    "wide+augment+5sf+synth-keep": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10, "finetune_extra": 0.5},
                                    (*SF5, "synth"), {"select_extra": (HELDOUT,)}),
    # The same keeping without the selection set (best epoch on the real valid notes only): which part does what.
    "wide+augment+5sf+synth-keep-noselect": ({**WIDE, "augment": AUGMENT, "pretrain_epochs": 10, "finetune_extra": 0.5},
                                             (*SF5, "synth"), {}),
}


def rendered_folder(name: str, cache: str, log=print) -> str:
    """Render a SoundFont or a synthesizer set once into the cache (a rerun with the same settings reuses it)."""
    folder = os.path.join(cache, name)
    if name in SYNTH_SETS:
        config = RenderConfig(folder, **SYNTH_SETS[name])
    else:
        soundfont, banks = VARIATIONS.get(name, (name, (0,)))
        path = SOUNDFONTS[soundfont] or default_soundfont()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is not installed (apt-get install fluid-soundfont-gm "
                                    "musescore-general-soundfont csound-soundfont opl3-soundfont)")
        config = RenderConfig(folder, (path,), source="synthetic" if soundfont in SYNTHETIC_SOUNDFONTS else None,
                              banks=banks, **RENDER)
    if not JsonWavLayout(folder).has(config.split):
        t = time.time()
        summary = render(config, log=log)
        log(summary.table())
        log(f"[render] {name}: {summary.written} notes in {time.time() - t:.1f} s "
            f"({1000 * (time.time() - t) / max(summary.written, 1):.1f} s per 1,000 notes)")
    return folder


def run_one(name: str, seed: int, args, out: str, left_out: str | None = None) -> tuple[dict, dict]:
    """Train one configuration and seed and score it; ``left_out``: train without that rendered set and score its
    notes too (leave one source out: instruments of a source the model never heard)."""
    fields, sets, data_fields = CONFIGS[name]
    sets = tuple(s for s in sets if s != left_out)
    extra = tuple(rendered_folder(s, args.render_cache) for s in sets)
    data_fields = {k: tuple(rendered_folder(s, args.render_cache) for s in v) if k == "select_extra" else v
                   for k, v in data_fields.items()}
    spec = dataclasses.replace(spec_from_args(args), extra_train=extra, **data_fields)
    config = TrainConfig(**fields, epochs=args.epochs, early_stopping=args.patience, seed=seed,
                         mixed_precision=args.precision, out=out, run_name=run_name(name, seed, left_out),
                         tflite=False, overwrite=True)
    t = time.time()
    run = train(config, spec)
    run_config = read_json(os.path.join(run, "config.json"))
    result = {"seed": seed, "seconds": round(time.time() - t, 1),
              "epochs_run": len(read_json(os.path.join(run, "history.json")).get("epoch", [])),
              "train_notes": run_config["train_notes_by_folder"], "precision": run_config["precision_policy"]}
    scoring = spec.real_only()
    if left_out:
        r, _ = evaluate(run, DataSpec(data_dir=rendered_folder(left_out, args.render_cache)), "train", audit=False)
        result["left_out"] = {"set": left_out, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                              "num_notes": r["num_notes"]}
    heldout = DataSpec(data_dir=rendered_folder(HELDOUT, args.render_cache))
    for split, data in (("valid", scoring), ("test", scoring), ("heldout_synth", heldout)):
        r, _ = evaluate(run, data, "valid" if split == "heldout_synth" else split, audit=split != "heldout_synth")
        result[split] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                         # Notes without a training twin, notes of copies no training note comes from, and notes
                         # of a family and source no training note has (None where there are none).
                         **{f"{part}_accuracy": r[part].get("accuracy") for part in SCORED_PARTS[1:] if part in r},
                         **{f"{part}_missed": r[part].get("missed_families") for part in ("novel",) if part in r},
                         "by_source": {k: v["accuracy"] for k, v in r.get("by_source", {}).items()},
                         "families": {f: {"accuracy": m["accuracy"], "f1": m["f1"]}
                                      for f, m in r["families"].items() if m["support"]},
                         "predicted_per_family": dict(zip(FAMILIES, np.asarray(
                             r["confusion_matrix"]["counts"]).sum(0).tolist()))}
    # The run's settings as config objects (every field), not an argv.
    return result, {"train": dataclasses.asdict(config), "data": spec.to_json()}


def run_name(name: str, seed: int, left_out: str | None = None) -> str:
    return f"{name.replace('+', '_')}-seed{seed}" + (f"-without-{left_out}" if left_out else "")


def run_loso(name: str, args, out: str, json_path: str) -> None:
    """Leave one source out: per seed, one run without each rendered set of the configuration, scored on that
    set's notes; recorded under the configuration's "loso" entry (mean over sets: the summary's loso_accuracy)."""
    sets = list(CONFIGS[name][1])
    if len(sets) < 2:
        print(f"[accuracy] {name}: --loso needs at least two rendered sets, it has {len(sets)}", flush=True)
        return
    for seed in args.seeds:
        for left_out in sets:
            r, _ = run_one(name, seed, args, out, left_out)
            print(f"[accuracy] {name} seed {seed} without {left_out}: its notes {r['left_out']['accuracy']:.3f}, "
                  f"test novel {r['test'].get('novel_accuracy', float('nan')):.3f} ({r['seconds']} s)", flush=True)
            results = read_json(json_path)["configs"]
            loso = results[name].setdefault("loso", {})
            loso.setdefault(left_out, {})[str(seed)] = {"left_out": r["left_out"], "test": r["test"],
                                                          "valid": r["valid"]}
            results[name]["summary"] = summarise(results[name]["runs"], loso)
            write_json(json_path, {**read_json(json_path), "configs": results}, indent=RESULTS_INDENT)


RESULTS_INDENT = None  # accuracy.json on one line: every run of every configuration, 1 MiB indented, 0.55 compact
PUBLISHED = ("model.keras", "model_waveform.tflite", "labels.txt", "config.json", "history.json")
Member = tuple[str, int, str]  # a published run: configuration, seed, run folder
# The spread the model card gives: (label, split, part of the split as evaluation.SCORED_PARTS names it).
CARD_SCORES = (("test accuracy", "test", "all"), ("test novel", "test", "novel"),
               ("test other copies", "test", "other_copies"),
               ("test of an unheard family and source", "test", "unheard_kinds"), ("valid novel", "valid", "novel"))


def publish(members: list[Member], spec: DataSpec, summary: dict | None, dest: str, onset: dict | None = None) -> None:
    """Make ``dest`` the shipped model: one run, or the ensemble of several (their probabilities averaged,
    nsynth_keras.ensemble); its Keras model and waveform TFLite (with metadata), config (and a single run's
    history), the evaluation of valid and test (with the twin audit) and a model card; swapped in whole."""
    from nsynth_keras.core.files import atomic_path
    from nsynth_keras.deploy.tflite import write_tflite
    from nsynth_keras.models.ensemble import write_ensemble
    from nsynth_keras.models.runs import load_keras, run_frontend

    with tempfile.TemporaryDirectory() as work:
        run = members[0][2] if len(members) == 1 else write_ensemble([m[2] for m in members],
                                                                     os.path.join(work, "ensemble"))
        write_tflite(load_keras(os.path.join(run, "model.keras")), "waveform",
                     os.path.join(run, "model_waveform.tflite"), frontend=run_frontend(run)[0])
        # the model is named as the shipped folder holds it, not by the temporary path it was scored at
        reports = {split: {**evaluate(run, spec, split)[0], "model": "model.keras"} for split in ("valid", "test")}
        with atomic_path(dest, folder=True) as tmp:
            os.makedirs(tmp)
            for file in PUBLISHED:
                if os.path.exists(os.path.join(run, file)):  # an ensemble has no history of its own
                    shutil.copy2(os.path.join(run, file), os.path.join(tmp, file))
            write_json(os.path.join(tmp, "evaluation.json"), reports)
            with open(os.path.join(tmp, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
                f.write(model_card(members, read_json(os.path.join(run, "config.json")), reports, summary, onset))
    sizes = {file: os.path.getsize(os.path.join(dest, file)) for file in os.listdir(dest)}
    print(f"[accuracy] published {published_name(members)} to {dest}: {sum(sizes.values()) / 2**20:.2f} MiB "
          + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sizes.items()))


def published_name(members: list[Member]) -> str:
    """How the card and the logs name what was published."""
    if len(members) == 1:
        return f"`{members[0][0]}`, seed {members[0][1]}"
    seeds = {name: [str(seed) for n, seed, _ in members if n == name] for name, _, _ in members}
    return f"an ensemble of {len(members)} runs: " + " and ".join(f"`{name}` seed{'s' * (len(s) > 1)} {', '.join(s)}"
                                                                   for name, s in seeds.items())


def ensemble_name(names: list[str], seeds_each: int) -> str:
    """The name an ensemble of these configurations' runs has in bench/onset.py's and ensemble.py's results."""
    return f"ensemble: {' + '.join(names)} ({seeds_each} seeds each)"


def features_of(config: dict) -> str:
    """The features a run's config.json says its model reads, in words."""
    return ("PCEN mel features (per-channel energy normalisation of 64 mel bands)"
            if config.get("frontend", {}).get("compression") in PCEN_COMPRESSIONS else "log-mel spectrograms")


def training_text(config: dict, reports: dict) -> str:
    """What a run was trained on and how, from its config.json."""
    settings = config["settings"]
    training = (f"Model `{settings['model']}`, up to {settings['epochs']} epochs (early stopping after "
                f"{settings['early_stopping']})"
                + (f", augmentations {', '.join(settings['augment'])}" if settings["augment"] else "")
                + (f", the recording chain on {settings['recording_chain']:.0%} of the training notes each epoch"
                   if settings.get("recording_chain") else "")
                + (f", {ONSET_DELAY_SHARE:.0%} of the training notes moved later by up to {settings['onset_delay']:g} "
                   "s each epoch" if settings.get("onset_delay") else "")
                + (f", the weights' moving average (momentum {settings['ema']:g}) kept" if settings.get("ema") else ""))
    folders = {os.path.basename(k).removesuffix(" (pretraining)"): n
               for k, n in config["train_notes_by_folder"].items()}
    real = os.path.basename(os.path.normpath(config["data"]["data_dir"]))
    rendered = ", ".join(f"{n:,} from {k}" for k, n in folders.items() if k != real)
    trained_on = (f"{config['notes']['pretrain']:,} rendered notes first ({rendered}; {settings['pretrain_epochs']} "
                  f"epochs), then the {folders.get(real, config['notes']['train']):,} real notes of {real}"
                  if config["notes"].get("pretrain") else
                  f"{config['notes']['train']:,} notes: " + ", ".join(f"{n:,} from {k}" for k, n in folders.items()))
    selection = "novel valid notes (no training twin)" if settings.get("select_on") == "novel" else "valid notes"
    chosen = config["notes"].get("selection", reports["valid"]["num_notes"])
    return (f"**Trained on** {trained_on}. {training}. Best epoch chosen on the {chosen} {selection}; precision "
            f"{config['precision_policy']}.")


def model_card(members: list[Member], config: dict, reports: dict, summary: dict | None,
               onset: dict | None = None) -> str:
    """The shipped model's card: what it is, what it was trained on, its scores (``summary``: its configuration's
    spread over seeds; ``onset``: its entry in bench/onset.py's results), what it is not for. ``config``: the
    published run's config.json (an ensemble's lists its members)."""
    test, valid = reports["test"], reports["valid"]
    fmt = "{mean:.3f} ± {std:.3f}".format
    spread = ""
    if summary:  # its keys: test_accuracy, test_novel_accuracy, ...
        keys = [(label, f"{split}_accuracy" if part == "all" else f"{split}_{part}_accuracy")
                for label, split, part in CARD_SCORES]
        spread = ("\n\nThe same configuration over seeds " + ", ".join(map(str, summary["seeds"])) + ": "
                  + "; ".join(f"{label} {fmt(**summary[k])}" for label, k in keys if k in summary) + ".")
    names = list(dict.fromkeys(name for name, _, _ in members))
    seeds = list(dict.fromkeys(seed for _, seed, _ in members))
    if onset and len(members) > 1:  # the same mix over replicates (bench/onset.py --per-seed --replicates)
        at_0 = {split: onset["splits"][split]["0"] for split in ("test", "valid")}
        groups = (f"{seed_count(onset)} replicates (seeds s and s+{onset['replicates']} of each configuration"
                  if onset.get("replicates") else f"{seed_count(onset)} seeds (one ensemble of each seed's runs")
        spread = (f"\n\nThe same mix over {groups}; bench/onset.py at 0 ms): "
                  + "; ".join(f"{label} {fmt(**at_0[split][part])}" for label, split, part in CARD_SCORES
                              if part in at_0[split]) + ".")
    families = "\n".join(f"| {f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} | "
                         f"{test['novel']['recall'].get(f, float('nan')):.3f} |"
                         for f, m in test["families"].items() if m["support"])
    sources = ", ".join(f"{k} {v['accuracy']:.3f} (n={v['num_notes']})" for k, v in test["by_source"].items())
    if onset:
        valid_novel = {float(d): row["novel"]["mean"] for d, row in onset["splits"]["valid"].items()}
        what = ("seeds of the configuration" if len(members) == 1 else
                "replicates of the mix" if onset.get("replicates") else "seeds of the mix")
        spread += ("\n\n**Notes that do not start at the onset.** Every NSynth note starts at its onset; moved later "
                   f"(silence in front; `bench/onset.py`, {seed_count(onset)} {what}), the novel "
                   "valid notes "
                   "score " + ", ".join(f"{v:.3f} at {d * 1000:g} ms" for d, v in sorted(valid_novel.items())) + ".")

    part = test.get("unheard_kinds")
    unheard = (f" On the {part['num_notes']} test notes of a family and source that no real training note has (an "
               f"electronic keyboard where every training keyboard is acoustic, say): {part['accuracy']:.3f}."
               if part and part["num_notes"] else "")

    def row(split: str, r: dict) -> str:
        part = r.get("other_copies")
        other = f"{part['accuracy']:.3f} (n={part['num_notes']})" if part and part["num_notes"] else "-"
        return (f"| {split} | {r['num_notes']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['top3_accuracy']:.3f} "
                f"| {r['novel']['accuracy']:.3f} (n={r['novel']['num_notes']}) | {other} |")

    if len(members) == 1:
        what_it_is = (f"**What it is.** A Keras CNN ({config['model']['params']:,} parameters; settings in "
                      "`config.json`) that names the instrument family (11 NSynth families) of one isolated 4-second "
                      f"note, from 64x64 {features_of(config)}. `model.keras` takes those features "
                      "`[batch, 64, 64, 1]` (`config.json` `frontend` says how they are computed; every command "
                      "computes them so); "
                      "`model_waveform.tflite` takes 16 kHz mono audio `[1, 64000]` with the frontend inside and "
                      "carries TFLite Metadata (labels, audio properties), for MediaPipe and the demo page.\n\n"
                      + training_text(config, reports))
    else:
        # one entry a configuration: its seeds differ in nothing else
        configs = {name: read_json(os.path.join(run, "config.json")) for name, _, run in reversed(members)}
        inside = "audio" in config["model"]["input"]
        what_it_is = (f"**What it is.** The mean of the family probabilities of {len(members)} Keras CNNs "
                      f"({config['model']['params']:,} parameters in all; each member's settings, data and scores "
                      "in `config.json` `ensemble`) that names the instrument family (11 NSynth families) of one "
                      "isolated 4-second note. "
                      + ("`model.keras` and `model_waveform.tflite` both take 16 kHz mono audio `[batch, 64000]`, each "
                         "member computing its own 64x64 features inside"
                         if inside else f"`model.keras` takes 64x64 {features_of(config)} `[batch, 64, 64, 1]`; "
                         "`model_waveform.tflite` takes 16 kHz mono audio `[1, 64000]` with the frontend inside")
                      + "; the TFLite carries TFLite Metadata (labels, audio properties), for MediaPipe and the demo "
                        "page. It is as large as its members together, and its time per clip is theirs together "
                        "(each frontend computed once).\n\n"
                      + "\n".join(f"- `{name}`, seed(s) {', '.join(str(s) for n, s, _ in members if n == name)} "
                                   f"({c['model']['params']:,} parameters each, 64x64 {features_of(c)}). "
                                   f"{training_text(c, reports)}" for name, c in reversed(configs.items())))
    return f"""# The shipped model: {published_name(members)}

What `predict`, `evaluate`, `tflite_check` and `web` use when no RUN is given. Rebuild it with the command below
(training is not bit-reproducible, so a rebuilt model scores within the seed-to-seed spread given under Scores):

```
python bench/accuracy.py --only {" ".join(names)} --seeds {" ".join(map(str, seeds))} --publish saved_models/pretrained
```

{what_it_is}

`nsynth` is the shared NSynth subset (40 instruments; CC BY 4.0); any other folder holds notes rendered by
`python -m nsynth_keras.render` (bench/README.md says how).

## Scores (`evaluation.json`; a test reproduces them)

| split | notes | accuracy | macro-F1 | top-3 | novel notes (no training twin) | notes of other copies |
|---|---|---|---|---|---|---|
{row("valid", valid)}
{row("test", test)}

Test by instrument source: {sources}.{unheard}{spread}

**Read the novel column.** Test instruments are never in training, but NSynth files some instruments twice under
other ids, and {test["twins"]["num_notes"]} of the {test["num_notes"]} test notes have such a near-copy in train
(`python -m nsynth_keras.audit`).
On an instrument or a recording it has never heard, expect the novel figure, not the full-test one.
Families never named right on novel test notes: {", ".join(test["novel"]["missed_families"]) or "none"}.

| family (test) | recall | F1 | notes | recall on novel notes |
|---|---|---|---|---|
{families}

## Not for

Chords, drum loops, speech, long mixes or silence: it was trained on single isolated notes, 4 s each, and always
answers with one of the 11 families, however far the input is from a note. synth_lead: the shared NSynth notes have
none in train or test, so whatever it says about synth leads is not measured here. Scores come from
{test["num_notes"]} test notes: read differences of a few points as noise.
"""


def mean_std(values) -> dict:
    values = np.asarray(list(values), float)
    return {"mean": float(values.mean()), "std": float(values.std())}


def summarise(runs: list[dict], loso: dict | None = None) -> dict:
    row = {f"{split}_{m}": mean_std(r[split][m] for r in runs)
           for split in ("valid", "test") for m in ("accuracy", "macro_f1")}
    for split in ("valid", "test"):
        for part in SCORED_PARTS[1:]:
            if all(r[split].get(f"{part}_accuracy") is not None for r in runs):
                row[f"{split}_{part}_accuracy"] = mean_std(r[split][f"{part}_accuracy"] for r in runs)
    if all("novel_missed" in r["test"] for r in runs):
        row["test_novel_missed"] = sorted({f for r in runs for f in r["test"]["novel_missed"]})
    row["test_by_source"] = {s: mean_std(r["test"]["by_source"][s] for r in runs)
                             for s in SOURCES if all(s in r["test"]["by_source"] for r in runs)}
    row["test_families"] = {f: {k: mean_std(r["test"]["families"][f][k] for r in runs) for k in ("accuracy", "f1")}
                            for f in FAMILIES if all(f in r["test"]["families"] for r in runs)}
    if all("heldout_synth" in r for r in runs):
        row["heldout_synth_accuracy"] = mean_std(r["heldout_synth"]["accuracy"] for r in runs)
        row["heldout_synth_lead_recall"] = mean_std(r["heldout_synth"]["families"].get("synth_lead", {})
                                                    .get("accuracy", 0.0) for r in runs)
        row["test_called_synth_lead"] = mean_std(r["test"]["predicted_per_family"]["synth_lead"] for r in runs)
    row["seeds"] = [r["seed"] for r in runs]
    if loso:
        # Each left-out set's accuracy averaged over its seeds, then the sets averaged: one number per configuration.
        per_set = {k: float(np.mean([v["left_out"]["accuracy"] for v in seeds.values()])) for k, seeds in loso.items()}
        row["loso_accuracy"] = {"mean": float(np.mean(list(per_set.values()))), "std": float(np.std(list(
            per_set.values()))), "sets": per_set, "seeds": sorted({int(k) for v in loso.values() for k in v})}
    return row


def ensemble_lines(ensembles: dict) -> list[str]:
    """The table of bench/ensemble.py's results: each ensemble beside its members' mean, and per seed where measured
    (one ensemble of each seed's members: the figure to compare with a configuration's 3 seeds)."""
    lines = ["", "Ensembles (`bench/ensemble.py`: the members' probabilities averaged; members' mean ± spread in "
             "brackets; \"per seed\": one ensemble of each seed's members, mean ± spread; \"per replicate\": one "
             "ensemble of seeds s and s+N of each configuration):", "",
             "| ensemble | members | valid novel | test | **test novel** | test other copies |",
             "|---|---|---|---|---|---|"]
    cells = (("valid", "novel"), ("test", "all"), ("test", "novel"), ("test", "other_copies"))
    for name, entry in ensembles.items():
        shown = []
        for split, part in cells:
            row = entry["splits"].get(split, {}).get(part)
            if row is None:
                shown.append("-")
                continue
            per = row.get("per_seed")
            each = "per replicate" if entry.get("replicates") else "per seed"
            shown.append(f"{row['ensemble']:.3f} [{row['members_mean']:.3f} ± {row['members_std']:.3f}]"
                         + (f"; {each} {per['mean']:.3f} ± {per['std']:.3f}" if per else ""))
        lines.append(f"| {name} | {len(entry['members'])} | " + " | ".join(shown) + " |")
    return lines


def markdown(results: dict, ensembles: dict | None = None, onset: dict | None = None) -> str:
    # valid novel over the onset delays (bench/onset.py), where measured: what chooses
    robust = {name: over_delays(e)["valid"]["novel"] for name, e in (onset or {}).items() if name in results}
    lines = [f"Updated {date.today()}; {os.cpu_count()} CPU cores. Test: 260 notes of 51 instruments never heard in "
             "training. Mean ± std over the seeds listed.", "",
             "| configuration | seeds | valid acc | valid novel | valid novel over onset delays | test acc | "
             "**test novel** | test other copies | test macro-F1 | test acoustic | test electronic | "
             "test synthetic | held-out synth acc (not NSynth) | held-out synth_lead recall | test notes called "
             "synth_lead | min/run |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = "{mean:.3f} ± {std:.3f}".format
    for name, entry in results.items():
        s = entry["summary"]
        by = s["test_by_source"]
        minutes = np.mean([r["seconds"] for r in entry["runs"]]) / 60
        shown = {k: fmt(**s[k]) if k in s else "-" for k in ("valid_novel_accuracy", "test_novel_accuracy",
                                                               "test_other_copies_accuracy")}
        lines.append(f"| {name} | {len(s['seeds'])} | {fmt(**s['valid_accuracy'])} | "
                     f"{shown['valid_novel_accuracy']} | "
                     + (f"{robust[name]:.3f}" if name in robust else "-") + f" | {fmt(**s['test_accuracy'])} | "
                     f"{shown['test_novel_accuracy']} | "
                     f"{shown['test_other_copies_accuracy']} | {fmt(**s['test_macro_f1'])} | "
                     + " | ".join(fmt(**by[k]) if k in by else "-" for k in SOURCES)
                     + " | " + " | ".join(fmt(**s[k]) if k in s else "-" for k in (
                         "heldout_synth_accuracy", "heldout_synth_lead_recall", "test_called_synth_lead"))
                     + f" | {minutes:.1f} |")
    # Chosen on what generalises (valid novel notes over the onset delays, where measured; else valid novel notes;
    # else valid), never on test.
    if robust:
        chosen_by, best = "valid novel over the onset delays (bench/onset.py)", max(robust, key=robust.get)
    else:
        key = "valid_novel_accuracy" if any("valid_novel_accuracy" in e["summary"] for e in results.values()) \
            else "valid_accuracy"
        chosen_by = key.replace("_", " ")
        best = max((k for k in results if key in results[k]["summary"]),
                   key=lambda k: results[k]["summary"][key]["mean"])
    lines += ["", f"Per family on test, the configuration chosen by {chosen_by} ({best}):", "",
              "| family | accuracy | F1 |", "|---|---|---|"]
    for family, m in results[best]["summary"]["test_families"].items():
        lines.append(f"| {family} | {fmt(**m['accuracy'])} | {fmt(**m['f1'])} |")
    missed = {name: e["summary"]["test_novel_missed"] for name, e in results.items()
              if "test_novel_missed" in e["summary"]}
    if missed:
        lines += ["", "Families never named right on the novel test notes (in at least one seed): "
                  + "; ".join(f"{name}: {', '.join(m) or 'none'}" for name, m in missed.items())]
    loso = {name: e["summary"]["loso_accuracy"] for name, e in results.items() if "loso_accuracy" in e["summary"]}
    if loso:
        lines += ["", "Leave one source out (trained without one rendered set, scored on that set's notes; mean over "
                  "the sets, ± their spread):", ""]
        lines += [f"- {name} (seeds {', '.join(map(str, m['seeds']))}): **{fmt(mean=m['mean'], std=m['std'])}**; "
                  + ", ".join(f"{k} {v:.3f}" for k, v in m["sets"].items()) for name, m in loso.items()]
    if ensembles:
        lines += ensemble_lines(ensembles)
    lines += ["", "Novel: test/valid notes whose nearest training note is below the twin threshold "
              "(`python -m nsynth_keras.audit`); other copies: the 60 test notes gathered from copies of NSynth that "
              "no training note comes from (the subset's manifest.csv); valid novel over onset delays: the novel "
              "valid notes moved later by 0, 50, 100, 250 and 500 ms (`bench/onset.py`, kept runs), the mean. "
              "Configurations are chosen on it where measured (else on valid novel accuracy); test is reported.",
              "", f"Reproduce one row: `python bench/accuracy.py --only {best} --seeds 0 --keep DIR`; "
              "every run's TrainConfig and DataSpec are in accuracy.json (`settings`)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), default=None, help="configurations to run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30, help="at most this many epochs (default: %(default)s)")
    p.add_argument("--patience", type=int, default=8, help="early stopping on val_accuracy (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=("auto", "off", "on", "bf16"),
                   help="training precision (default: auto: bf16 only on a CPU with native bf16, where it is "
                        "1.9x faster; each run records the policy it got)")
    p.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    p.add_argument("--render-cache", default=os.path.expanduser("~/.cache/nsynth-keras/rendered"),
                   help="rendered notes, outside the repository (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 40 notes per split, two configurations")
    p.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--report", action="store_true", help="only rewrite accuracy.md from accuracy.json")
    p.add_argument("--publish", default=None, metavar="DIR",
                   help="make DIR the shipped model (e.g. saved_models/pretrained) from the run of the one --only "
                        "configuration and seed, or the ensemble of every configuration's runs of every seed: its "
                        "model, waveform TFLite, config, evaluation and model card")
    p.add_argument("--loso", action="store_true",
                   help="leave one source out instead: for each --only configuration (its table row must exist) and "
                        "seed, one run without each of its rendered sets, scored on that set's notes")
    args = p.parse_args(argv)
    names = args.only or list(CONFIGS)
    if args.quick:
        args.epochs, args.seeds, args.max_examples = 1, [0], 40
        names = args.only or ["baseline", "baseline+timgm6mb"]
    suffix = "_quick" if args.quick else ""
    json_path = os.path.join(args.results, f"accuracy{suffix}.json")
    onset_path = os.path.join(args.results, "onset.json")  # bench/onset.py's results: the model card, the choice
    results = read_json(json_path)["configs"] if os.path.isfile(json_path) else {}
    if args.report:
        names = []
    if args.publish and (not args.only or args.loso or args.quick):
        p.error("--publish takes the configurations (--only NAME ...) and seeds (--seeds N ...) to train and ship")
    members: list[Member] = []  # the runs to publish: one, or their ensemble
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or tmp
        if args.loso:
            for name in names:
                if name in results:
                    run_loso(name, args, out, json_path)
                else:
                    print(f"[accuracy] {name}: --loso needs its table row first (run it without --loso)", flush=True)
            results, names = read_json(json_path)["configs"] if os.path.isfile(json_path) else {}, []
        for name in names:
            try:
                for seed in args.seeds:
                    r, settings = run_one(name, seed, args, out)
                    run_dir = os.path.join(out, run_name(name, seed))
                    print(f"[accuracy] {name} seed {seed}: test acc {r['test']['accuracy']:.3f} macro-F1 "
                          f"{r['test']['macro_f1']:.3f} ({r['seconds']} s, {r['epochs_run']} epochs)", flush=True)
                    # Read again before writing: another invocation may have added runs meanwhile. A run replaces
                    # only the row's run of the same seed, so reproducing one seed keeps the others.
                    results = read_json(json_path)["configs"] if os.path.isfile(json_path) else {}
                    runs = {x["seed"]: x for x in results.get(name, {}).get("runs", [])}
                    runs[seed] = r
                    runs = [runs[k] for k in sorted(runs)]
                    loso = results.get(name, {}).get("loso")
                    results[name] = {"settings": settings, "runs": runs, "summary": summarise(runs, loso),
                                     **({"loso": loso} if loso else {})}
                    os.makedirs(args.results, exist_ok=True)
                    write_json(json_path, {"epochs": args.epochs, "patience": args.patience,
                                           "render": {**RENDER, "velocities": list(RENDER["velocities"])},
                                           "synth_sets": json.loads(json.dumps(SYNTH_SETS)), "configs": results},
                               indent=RESULTS_INDENT)
                    members.append((name, seed, run_dir))
            except FileNotFoundError as err:
                print(f"[accuracy] {name}: skipped: {err}", flush=True)
                continue
        if args.publish and members:
            mix = names[0] if len(members) == 1 else ensemble_name(names, len(args.seeds))
            onset = read_json(onset_path).get(mix) if os.path.isfile(onset_path) else None
            summary = results[names[0]]["summary"] if len(members) == 1 and len(results[names[0]]["runs"]) > 1 \
                else None
            publish(members, spec_from_args(args).real_only(), summary, args.publish, onset)
    ensembles_path = os.path.join(args.results, "ensemble.json")
    ensembles = read_json(ensembles_path) if os.path.isfile(ensembles_path) and not args.quick else None
    onset = read_json(onset_path) if os.path.isfile(onset_path) and not args.quick else None
    md = markdown(results, ensembles, onset) if results else "no configuration ran\n"
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, f"accuracy{suffix}.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
