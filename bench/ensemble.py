"""An ensemble of seeds, measured: the runs of one configuration (e.g. the 3 seeds that bench/accuracy.py keeps
with --keep DIR) scored alone and with their probabilities averaged, on valid and test, full split and the
novel and other-copy notes (the twin audit), side by side.

    python bench/accuracy.py --only NAME --seeds 0 1 2 --keep ~/runs/NAME
    python bench/ensemble.py ~/runs/NAME/*-seed* --name NAME      # writes bench/results/ensemble.json

Members may come from several configurations, of different frontends too (each is fed its own features); --name
then names the mix. An ensemble costs its member count in size and latency; it pays only if it beats the members'
mean by more than their spread.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nsynth_keras.cli import add_data_args, spec_from_args  # noqa: E402
from nsynth_keras.core.files import set_json_entry  # noqa: E402
from nsynth_keras.data.twins import audit_split  # noqa: E402
from nsynth_keras.deploy.inference import load_classifier  # noqa: E402
from nsynth_keras.reports.evaluation import SCORED_PARTS, predict_split_with, split_scores  # noqa: E402


def seed_groups(parser: argparse.ArgumentParser, names: list[str],
                replicates: int | None = None) -> dict[int, list[int]]:
    """seed -> the indices of the run folders (named ...-seedN) of that seed; a usage error if one is not. With
    ``replicates`` N, seed s joins the group of s mod N: seeds 0-5 of a configuration make 3 groups of 2."""
    seeds = [re.search(r"-seed(\d+)", name) for name in names]
    if not all(seeds):
        parser.error("--per-seed needs every run folder named ...-seedN: "
                     + ", ".join(n for n, s in zip(names, seeds) if not s))
    by_seed: dict[int, list[int]] = {}
    for i, match in enumerate(seeds):
        seed = int(match.group(1))
        by_seed.setdefault(seed % replicates if replicates else seed, []).append(i)
    return by_seed


def add_grouping_args(parser: argparse.ArgumentParser) -> None:
    """--per-seed and --replicates, as bench/ensemble.py and bench/onset.py take them."""
    parser.add_argument("--per-seed", action="store_true",
                        help="average the runs of each seed (folders named ...-seedN) first: one ensemble per seed, "
                             "their mean and spread (a mix of configurations measured over seeds)")
    parser.add_argument("--replicates", type=int, default=None, metavar="N",
                        help="with --per-seed: seed s joins ensemble s mod N (seeds 0-5, N 3: three ensembles of "
                             "each configuration's seeds s and s+3)")


def check_grouping(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A usage error for --replicates without --per-seed or below 1."""
    if args.replicates is not None and (args.replicates < 1 or not args.per_seed):
        parser.error("--replicates N: N at least 1, with --per-seed")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (the members)")
    p.add_argument("--name", default="ensemble", help="the configuration's name in the results (default: %(default)s)")
    add_data_args(p)
    p.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "ensemble.json"))
    add_grouping_args(p)
    args = p.parse_args(argv)
    check_grouping(p, args)
    spec = spec_from_args(args)
    members = [load_classifier(run) for run in args.runs]
    names = [os.path.basename(os.path.normpath(r)) for r in args.runs]
    by_seed = seed_groups(p, names, args.replicates) if args.per_seed else {}
    result = {"members": names, "replicates": args.replicates, "splits": {}}
    for split in ("valid", "test"):
        y, _, all_probs, notes = predict_split_with(members, spec, split)  # the split decoded once for all
        audit = audit_split(spec, split)
        member_scores = [split_scores(spec, split, y, probs, notes, audit) for probs in all_probs]
        together = split_scores(spec, split, y, np.mean(all_probs, axis=0), notes, audit)
        per_seed = {seed: split_scores(spec, split, y, np.mean([all_probs[i] for i in index], axis=0), notes, audit)
                    for seed, index in by_seed.items()}
        rows = {}
        for part in SCORED_PARTS:
            values = [s[part] for s in member_scores if s.get(part) is not None]
            if not values:
                continue
            rows[part] = {"members": values, "members_mean": statistics.mean(values),
                          "members_std": statistics.pstdev(values), "ensemble": together[part]}
            line = ""
            if by_seed:
                per = {seed: seed_scores[part] for seed, seed_scores in per_seed.items()}
                rows[part]["per_seed"] = {"ensembles": per, "mean": statistics.mean(per.values()),
                                          "std": statistics.pstdev(per.values())}
                line = (f"  per seed {rows[part]['per_seed']['mean']:.3f} +-{rows[part]['per_seed']['std']:.3f} "
                        f"({len(per)} ensembles of {len(args.runs) // len(per)})")
            print(f"[ensemble] {split:5} {part:12} members {statistics.mean(values):.3f} "
                  f"+-{statistics.pstdev(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})  "
                  f"ensemble {together[part]:.3f}{line}", flush=True)
        result["splits"][split] = rows
    set_json_entry(args.json, args.name, result)
    return result


if __name__ == "__main__":
    main()
