"""Twin audit: for every valid and test note, its nearest training note and how similar they are.

    python -m nsynth_keras.audit --data-dir ../shared/nsynth
    python -m nsynth_keras.audit --data-dir ../shared/nsynth --extra-train ~/nsynth-rendered/fluidr3 --json audit.json

NSynth files some instruments twice under different ids across its splits; a model that names such a note
has recognised an instrument it already heard. A note whose nearest training note (within 2 semitones)
reaches the twin threshold (mean-removed log-mel cosine, calibrated in nsynth_keras/twins.py) is a twin;
the rest are novel, and every evaluation reports its accuracy on the novel notes too. --extra-train folders
join the training notes, so a SoundFont sample that copies a valid/test instrument shows up here.
"""

from __future__ import annotations

import argparse
import sys

from nsynth_keras.cli import add_data_args, make_parser, run_command, spec_from_args
from nsynth_keras.core.files import check_output_file, write_json
from nsynth_keras.data.twins import TWIN_SIMILARITY, audit_against, note_vectors, training_vectors
from nsynth_keras.reports.plots import plot_twin_histogram


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("audit", __doc__)
    p.add_argument("--splits", nargs="+", choices=("valid", "test"), default=["valid", "test"],
                   help="splits to audit (default: valid test)")
    p.add_argument("--threshold", type=float, default=TWIN_SIMILARITY,
                   help="similarity from which a note counts as a twin (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="FILE", help="write every note's nearest training note here")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="write the similarity histogram here")
    p.add_argument("--top", type=int, default=10, help="twin instrument pairs to list per split (default: 10)")
    add_data_args(p, extra=True)
    return p


def run(args: argparse.Namespace) -> None:
    for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
        if path:
            check_output_file(path, flag)  # before any work
    spec = spec_from_args(args)
    reference = training_vectors(spec)
    print(f"{len(reference)} training notes (real{' and --extra-train' if spec.extra_train else ''}); "
          f"twin threshold {args.threshold}")
    audits = {s: audit_against(note_vectors(spec, s), reference, s, args.threshold) for s in args.splits}
    summaries = {split: a.summary() for split, a in audits.items()}
    print(f"\n{'split':<7}{'notes':>7}{'twins':>7}{'novel':>7}")
    for split, summary in summaries.items():
        print(f"{split:<7}{summary['notes']:>7}{summary['twins']:>7}{summary['novel']:>7}")
    for split, summary in summaries.items():
        pairs = summary["twin_instruments"][: args.top]
        if pairs:
            print(f"\n{split}: instruments with training twins (notes)")
            for p in pairs:
                print(f"  {p['instrument']:<28} ~ {p['training_instrument']:<28} {p['notes']:>3}")
    if args.json:
        write_json(args.json, {"threshold": args.threshold, "training_notes": len(reference),
                               "data": spec.to_json(),
                               "splits": {s: {"summary": summaries[s], "notes": a.rows()} for s, a in audits.items()}})
        print(f"\nWrote {args.json}")
    if args.plot:
        plot_twin_histogram({s: a.similarity for s, a in audits.items()}, args.threshold, args.plot)
        print(f"Wrote {args.plot}")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
