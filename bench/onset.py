"""Onset robustness, measured: run folders (the seeds of one configuration) scored with every note moved later by
each delay, silence in front, on valid and test: full split, novel notes and notes of other copies (the twin
audit). Every NSynth note starts at its onset (frame 0); a recording, a window of a stream or a clip a user cuts
seldom does.

    python bench/accuracy.py --only NAME --seeds 0 1 2 --keep ~/runs/NAME
    python bench/onset.py ~/runs/NAME/*-seed* --name NAME      # writes bench/results/onset.json

With --per-seed the runs of each seed (of several configurations) are averaged first: one ensemble per seed
(--replicates 3: seeds s and s+3 in one ensemble).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ensemble import add_grouping_args, check_grouping, seed_groups  # noqa: E402  (bench/, this script's folder)

from nsynth_keras.cli import add_data_args, spec_from_args  # noqa: E402
from nsynth_keras.core.config import CLIP_SECONDS  # noqa: E402
from nsynth_keras.core.files import atomic_path, read_json, set_json_entry  # noqa: E402
from nsynth_keras.data.twins import audit_split  # noqa: E402
from nsynth_keras.deploy.inference import load_classifier  # noqa: E402
from nsynth_keras.reports.evaluation import SCORED_PARTS, predict_split_with, split_scores  # noqa: E402

DELAYS_S = (0.0, 0.05, 0.1, 0.25, 0.5)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run folders (one configuration's seeds: mean and spread over them)")
    p.add_argument("--name", default="runs", help="the configuration's name in the results (default: %(default)s)")
    p.add_argument("--delays", type=float, nargs="+", default=DELAYS_S, metavar="S",
                   help="onset delays in seconds (default: %(default)s)")
    add_grouping_args(p)
    add_data_args(p)
    p.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "onset.json"))
    p.add_argument("--report", action="store_true", help="only write results/onset.md from the json")
    args = p.parse_args(argv)
    check_grouping(p, args)
    if args.report:
        print(write_report(args.json))
        return read_json(args.json)
    if any(not 0 <= d < CLIP_SECONDS for d in args.delays):
        p.error(f"--delays: each at least 0 and under {CLIP_SECONDS:g} s (a note's length)")
    if not args.runs:
        p.error("give the run folders to score (or --report)")
    spec = spec_from_args(args)
    runs = [load_classifier(run) for run in args.runs]
    names = [os.path.basename(os.path.normpath(r)) for r in args.runs]
    groups = list(seed_groups(p, names, args.replicates).values()) if args.per_seed else [[i] for i in range(len(runs))]
    result = {"runs": names, "per_seed": args.per_seed, "replicates": args.replicates, "splits": {}}
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
    result["over_delays"] = over_delays(result)
    print(f"[onset] {args.name}: valid novel over the delays {result['over_delays']['valid'].get('novel', 0):.3f}",
          flush=True)
    set_json_entry(args.json, args.name, result)
    write_report(args.json)
    return result


def over_delays(entry: dict) -> dict[str, dict[str, float]]:
    """split -> part -> the mean accuracy over the delays (each delay's mean over the seeds)."""
    return {split: {part: statistics.mean(row[part]["mean"] for row in rows.values() if part in row)
                    for part in SCORED_PARTS if any(part in row for row in rows.values())}
            for split, rows in entry["splits"].items()}


def seed_count(entry: dict) -> int:
    """How many seeds (or per-seed ensembles) an entry's figures are the mean of."""
    return len(next(iter(entry["splits"]["valid"].values()))["all"]["runs"])


def write_report(json_path: str) -> str:
    """results/onset.md beside the json: one row per configuration, valid novel at each delay and over them."""
    entries = read_json(json_path)
    delays = sorted({d for e in entries.values() for d in e["splits"]["valid"]}, key=float)

    def cell(entry, split, delay, part="novel"):
        m = entry["splits"][split].get(delay, {}).get(part)
        return f"{m['mean']:.3f}" if m else "-"

    def over(entry, split, part):
        v = over_delays(entry)[split].get(part)
        return f"{v:.3f}" if v is not None else "-"

    lines = ["Every note moved later by each delay (silence in front), mean over the seeds (`--per-seed`: one "
             "ensemble per seed).", "",
             "| configuration | seeds | " + " | ".join(f"valid novel {float(d) * 1000:g} ms" for d in delays)
             + " | **valid novel over the delays** | test novel 0 ms | test novel over the delays | other copies 0 ms "
             "| other copies over the delays |",
             "|---|---|" + "---|" * (len(delays) + 5)]
    for name, e in sorted(entries.items(), key=lambda kv: -over_delays(kv[1])["valid"].get("novel", 0)):
        runs = f"{seed_count(e)}" + (f" (ensembles, seeds s and s+{e['replicates']})" if e.get("replicates") else
                                     " (ensembles, one per seed)" if e.get("per_seed") else "")
        lines.append(f"| {name} | {runs} | " + " | ".join(cell(e, "valid", d) for d in delays)
                     + f" | **{over(e, 'valid', 'novel')}** | {cell(e, 'test', '0')} | {over(e, 'test', 'novel')} | "
                     f"{cell(e, 'test', '0', 'other_copies')} | {over(e, 'test', 'other_copies')} |")
    path = os.path.splitext(json_path)[0] + ".md"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    main()
