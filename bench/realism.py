"""Synthesizer realism, per kind: does a model that never heard a synthesizer, the homework CNN trained on the real
NSynth notes alone, name each preset kind's family? A kind that real-only models mostly call something else sounds
unlike that family's real notes, and teaches a model trained on it little about them.

    python bench/realism.py --data-dir ../shared/nsynth                   # writes bench/results/realism.json
    python bench/realism.py --data-dir ../shared/nsynth --label before    # another entry in the same file

The real-only models are the accuracy bench's "baseline" (up to 30 epochs, early stopping after 8), one per seed,
trained once into --runs and reused. Every kind plays --presets presets at three pitches of its family's range
(a quarter, half and three quarters of the way up), velocity 100; the score is the share of those notes named as the
preset's family, averaged over the seeds' models. A family without real training notes (synth_lead in the shared
subset) is listed as not measurable.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nsynth_keras.cli import add_data_args, spec_from_args  # noqa: E402
from nsynth_keras.core.config import FAMILIES  # noqa: E402
from nsynth_keras.core.files import read_json, set_json_entry  # noqa: E402
from nsynth_keras.data.notes import read_examples  # noqa: E402
from nsynth_keras.deploy.inference import load_classifier, predict_waveforms  # noqa: E402
from nsynth_keras.learn.training import TrainConfig, train  # noqa: E402
from nsynth_keras.models.runs import RunFolder  # noqa: E402
from nsynth_keras.sounds.synth import VOICES, make_preset, render_note  # noqa: E402

VELOCITY = 100


def real_only_models(spec, seeds: list[int], runs: str, epochs: int, patience: int) -> list[str]:
    """The homework CNN trained on the real notes alone, one run per seed (a finished run of the same settings and
    data is reused)."""
    folders = []
    for seed in seeds:
        name = f"real-only-seed{seed}"
        config = TrainConfig(epochs=epochs, early_stopping=patience, seed=seed, out=runs, run_name=name, tflite=False,
                             overwrite=True)
        folder, recorded = os.path.join(runs, name), os.path.join(runs, name, RunFolder.CONFIG)
        done = read_json(recorded) if os.path.isfile(recorded) else {}
        same = done.get("data") == spec.to_json() and all(
            done.get("settings", {}).get(k) == getattr(config, k) for k in ("epochs", "early_stopping", "seed"))
        if not same:
            print(f"[realism] training {name} on the real notes of {spec.data_dir}", flush=True)
            train(config, spec, verbose=0)
        folders.append(folder)
    return folders


def kind_notes(family: str, kind: str, presets: int, seed: int) -> np.ndarray:
    """``presets`` presets of one kind, each at three pitches of the family's range: waveforms [n, 64000]."""
    kinds = list(VOICES[family])
    waves = []
    for n in range(presets):
        preset = make_preset(family, kinds.index(kind) + n * len(kinds), seed)
        low, high = preset.pitch_range
        for pitch in (low + (high - low) // 4, (low + high) // 2, high - (high - low) // 4):
            waves.append(render_note(preset, pitch, VELOCITY))
    return np.stack(waves)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one real-only model per seed")
    p.add_argument("--epochs", type=int, default=30, help="at most this many epochs (default: %(default)s)")
    p.add_argument("--patience", type=int, default=8, help="early stopping on val_accuracy (default: %(default)s)")
    p.add_argument("--presets", type=int, default=8, help="presets of each kind (default: %(default)s)")
    p.add_argument("--preset-seed", type=int, default=0, help="the synthesizer's preset seed (default: %(default)s)")
    p.add_argument("--runs", default=os.path.expanduser("~/.cache/nsynth-keras/realism"),
                   help="the real-only runs, trained once and reused (default: %(default)s)")
    p.add_argument("--label", default="synth", help="this measurement's name in the results (default: %(default)s)")
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "realism.json"))
    args = p.parse_args(argv)
    spec = spec_from_args(args)
    runs = real_only_models(spec, args.seeds, args.runs, args.epochs, args.patience)
    models = [load_classifier(run) for run in runs]
    # A family the real training notes lack (synth_lead in the shared subset) cannot be named by these models.
    heard = {FAMILIES[f] for seed in args.seeds for f in read_examples(spec.data_dir, "train", spec.filters,
                                                                       seed=seed, check=False).family}
    kinds, start = {}, time.time()
    print(f"[realism] {'family':10} {'kind':15} named right (mean over {len(models)} models)  most often named")
    for family in FAMILIES:
        for kind in VOICES[family]:
            waves = kind_notes(family, kind, args.presets, args.preset_seed)
            named = [np.argmax(predict_waveforms(model, waves), axis=1) for model in models]
            right = [float(np.mean(n == FAMILIES.index(family))) for n in named]
            counts = collections.Counter(FAMILIES[i] for n in named for i in n)
            score = statistics.mean(right) if family in heard else None
            kinds[kind] = {"family": family, "notes": len(waves), "recognised": score,
                           "recognised_each": right if family in heard else None,
                           "named_as": dict(counts.most_common())}
            shown = f"{score:.2f} ({', '.join(f'{r:.2f}' for r in right)})" if score is not None else \
                "not measurable: no real training note of the family"
            top = ", ".join(f"{f} {c}" for f, c in counts.most_common(3))
            print(f"[realism] {family:10} {kind:15} {shown}  {top}", flush=True)
    families = {f: statistics.mean(k["recognised"] for k in kinds.values() if k["family"] == f) for f in FAMILIES
                if f in heard}
    scored = [k["recognised"] for k in kinds.values() if k["recognised"] is not None]
    result = {"models": [os.path.basename(run) for run in runs], "presets_per_kind": args.presets,
              "preset_seed": args.preset_seed, "velocity": VELOCITY, "kinds": kinds, "families": families,
              "not_measurable": [f for f in FAMILIES if f not in heard],
              "mean_over_kinds": statistics.mean(scored), "kinds_scored": len(scored),
              "seconds": round(time.time() - start, 1)}
    print(f"[realism] mean over {len(scored)} kinds {result['mean_over_kinds']:.3f}; by family: "
          + ", ".join(f"{f} {v:.2f}" for f, v in families.items()))
    set_json_entry(args.json, args.label, result)
    return result


if __name__ == "__main__":
    main()
