"""Onset robustness, measured: run folders (the seeds of one configuration) scored with every note moved later by
each delay, silence in front, on valid and test: full split, novel notes and notes of other copies (the twin
audit). Every NSynth note starts at its onset (frame 0); a recording, a window of a stream or a clip a user cuts
seldom does.

    python bench/accuracy.py --only NAME --seeds 0 1 2 --keep ~/runs/NAME
    python bench/onset.py ~/runs/NAME/*-seed* --name NAME      # writes bench/results/onset.json

With --per-seed the runs of each seed (of several configurations) are averaged first: one ensemble per seed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ensemble import seed_groups  # noqa: E402  (bench/, this script's folder)

from nsynth_keras.cli import add_data_args, spec_from_args  # noqa: E402
from nsynth_keras.core.files import set_json_entry  # noqa: E402
from nsynth_keras.data.twins import audit_split  # noqa: E402
from nsynth_keras.deploy.inference import load_classifier  # noqa: E402
from nsynth_keras.reports.evaluation import SCORED_PARTS, predict_split_with, split_scores  # noqa: E402

DELAYS_S = (0.0, 0.05, 0.1, 0.25, 0.5)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (one configuration's seeds: mean and spread over them)")
    p.add_argument("--name", default="runs", help="the configuration's name in the results (default: %(default)s)")
    p.add_argument("--delays", type=float, nargs="+", default=DELAYS_S, metavar="S",
                   help="onset delays in seconds (default: %(default)s)")
    p.add_argument("--per-seed", action="store_true",
                   help="average the runs of each seed (folders named ...-seedN) first: one ensemble per seed")
    add_data_args(p)
    p.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "onset.json"))
    args = p.parse_args(argv)
    if any(not 0 <= d < 4 for d in args.delays):
        p.error("--delays: each between 0 and 4 s (a note is 4 s long)")
    spec = spec_from_args(args)
    runs = [load_classifier(run) for run in args.runs]
    names = [os.path.basename(os.path.normpath(r)) for r in args.runs]
    groups = list(seed_groups(p, names).values()) if args.per_seed else [[i] for i in range(len(runs))]
    result = {"runs": names, "per_seed": args.per_seed, "splits": {}}
    for split in ("valid", "test"):
        audit = audit_split(spec, split)
        rows = result["splits"][split] = {}
        for delay in args.delays:
            y, _, probs, notes = predict_split_with(runs, spec, split, onset_delay=delay)
            per_run = [split_scores(spec, split, y, np.mean([probs[i] for i in group], axis=0), notes, audit)
                       for group in groups]
            row = rows[f"{delay:g}"] = {}
            for part in SCORED_PARTS:
                values = [s[part] for s in per_run if s.get(part) is not None]
                if values:
                    row[part] = {"runs": values, "mean": statistics.mean(values), "std": statistics.pstdev(values)}
            print(f"[onset] {split:5} delay {delay * 1000:4.0f} ms  " + "  ".join(
                f"{part} {m['mean']:.3f} +-{m['std']:.3f}" for part, m in row.items()), flush=True)
    set_json_entry(args.json, args.name, result)
    return result


if __name__ == "__main__":
    main()
