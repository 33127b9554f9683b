"""Prepare TFDS nsynth from json/wav notes with the real TFDS builder (Apache Beam), offline.

    python -m nsynth_keras.prepare --data-dir ../shared/nsynth --tfds-dir ~/tensorflow_datasets
    python -m nsynth_keras.train --source tfds --data-dir ~/tensorflow_datasets --epochs 3

Writes the official NSynth TFRecord release (nsynth-{train,valid,test}.tfrecord.tar and
nsynth-instrument_labels.txt) from any folder in the json/wav layout (the shared subset, or notes
from nsynth_keras.render), then runs tfds.builder("nsynth/full").download_and_prepare() on it with
Beam's DirectRunner. Only the download step is pointed at the local files; everything else is the
TFDS builder's own. A second run reuses what is prepared.

With the real release or access to its bucket, run the same builder at full scale instead (305,979
notes; see README "Full NSynth and many machines"): `tfds build nsynth/full --data_dir=gs://BUCKET/...
--beam_pipeline_options="runner=DataflowRunner,project=...,temp_location=gs://BUCKET/temp,..."`, or
`runner=DirectRunner,direct_num_workers=N` on one large machine.
"""

from __future__ import annotations

import argparse
import sys

from nsynth_keras.cli import make_parser, run_command
from nsynth_keras.core.config import DEFAULT_DATA_DIR


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("prepare", __doc__)
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help="json/wav folder with nsynth-{train,valid,test}/ (default: %(default)s)")
    p.add_argument("--tfds-dir", required=True, help="TFDS data_dir to prepare nsynth/full into")
    p.add_argument("--max-examples", type=int, default=None, metavar="N",
                   help="at most N notes per split, a seeded sample (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-examples sample (default: 0)")
    return p


def run(args: argparse.Namespace) -> None:
    from nsynth_keras.sounds.release import prepare_tfds  # loads TensorFlow and TFDS: not for --help

    if args.max_examples is not None and args.max_examples < 1:
        raise ValueError("--max-examples must be at least 1")
    builder = prepare_tfds(args.data_dir, args.tfds_dir, max_examples=args.max_examples, seed=args.seed)
    for name, split in builder.info.splits.items():
        print(f"{name:6} {split.num_examples:7} notes in {split.num_shards} shard(s)")
    print(f"Prepared {builder.data_dir}: train with --source tfds --data-dir {args.tfds_dir}")


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
