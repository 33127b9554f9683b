"""Train a CNN on NSynth log-mels and write a complete run folder.

    python -m nsynth_keras.train --data-dir ../shared/nsynth --epochs 3

The run folder (saved_models/<run-name>/) gets model.keras, saved_model/, model.tflite,
labels.txt, history.json, config.json, learning_curves.png and TensorBoard logs/. It is
written under a temporary name and renamed when complete. Rerunning a killed run with the
same --run-name (and the same settings) resumes it from its last finished epoch.
"""

from __future__ import annotations

import argparse
import sys

from nsynth_keras.cli import (
    add_data_args,
    add_extra_train_args,
    finite_float,
    make_parser,
    run_command,
    spec_from_args,
)
from nsynth_keras.config import DEFAULT_RUNS_DIR
from nsynth_keras.features import AUGMENTATIONS
from nsynth_keras.model import HOMEWORK
from nsynth_keras.training import TrainConfig, train


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("train", __doc__)
    add_data_args(p)
    add_extra_train_args(p)
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=("baseline", "cnn"), default="baseline",
                   help="baseline: the homework CNN; cnn: configured by the flags below (default: %(default)s)")
    m.add_argument("--filters", type=int, nargs="+", default=list(HOMEWORK["filters"]),
                   help="kernels per conv block (cnn; default: %(default)s)")
    m.add_argument("--kernel-size", type=int, default=3, help="conv kernel size (cnn; default: %(default)s)")
    m.add_argument("--padding", choices=("same", "valid"), default="same",
                   help="conv padding (cnn; default: %(default)s)")
    m.add_argument("--strides", type=int, choices=(1, 2), default=1, help="conv strides (cnn; default: %(default)s)")
    m.add_argument("--dropout", type=finite_float, default=0.0,
                   help="Dropout rate after each block (cnn; default: %(default)s)")
    m.add_argument("--dense-units", type=int, default=0,
                   help="hidden Dense width before the classifier, 0: none (cnn; default: %(default)s)")
    m.add_argument("--batch-norm", action="store_true", help="batch normalisation after each conv (cnn)")
    m.add_argument("--global-pool", action="store_true", help="global average pooling instead of Flatten (cnn)")
    m.add_argument("--weight-decay", type=finite_float, default=0.0, help="L2 weight decay (cnn; default: %(default)s)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=20, help="epochs (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    t.add_argument("--learning-rate", type=finite_float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    t.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="learning-rate schedule over the epochs (default: %(default)s)")
    t.add_argument("--augment", nargs="+", default=[], choices=AUGMENTATIONS, metavar="AUG",
                   help=f"training-only augmentations: {', '.join(AUGMENTATIONS)} (default: none)")
    t.add_argument("--pretrain-epochs", type=int, default=0, metavar="N",
                   help="first train N epochs on the --extra-train notes alone, then fine-tune --epochs on the "
                        "real ones (default: 0, mix them instead)")
    t.add_argument("--finetune-extra", type=finite_float, default=0.0, metavar="R",
                   help="with --pretrain-epochs: keep R extra notes per real note in the fine-tuning batches, so "
                        "families only the extra notes have (synth_lead) are not forgotten (default: 0)")
    t.add_argument("--label-smoothing", type=finite_float, default=0.0,
                   help="label smoothing for the cross-entropy (default: %(default)s)")
    t.add_argument("--class-weight", action="store_true",
                   help="weight the loss by inverse family frequency (balanced)")
    t.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better val_accuracy (default: 0, off)")
    t.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling (default: %(default)s)")
    t.add_argument("--deterministic", action="store_true",
                   help="enable TF op determinism: identical metrics for identical runs (slower); "
                        "--augment draws from stateful RNGs and is not bit-reproducible")
    t.add_argument("--mixed-precision", choices=("auto", "on", "off", "bf16"), default="auto",
                   help="auto: mixed_float16 when a GPU is visible, mixed_bfloat16 on a CPU with native bf16 "
                        "(avx512_bf16/amx_bf16), else float32; on: mixed_float16; bf16: mixed_bfloat16; off: "
                        "float32. Exports are always float32 (default: %(default)s)")
    t.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                   help="default: one device; mirrored: all GPUs of this machine; multiworker: several machines "
                        "(TF_CONFIG). --batch-size is per replica: the global batch is it x replicas")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=DEFAULT_RUNS_DIR, help="folder for run folders (default: %(default)s)")
    o.add_argument("--run-name", default=None, help="run folder name, one plain name inside --out "
                   "(default: <model>-<timestamp>); reuse a killed run's name to resume it")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder of that name (only once the new run is complete) "
                        "and discard a killed run's partial folder")
    o.add_argument("--cache-dir", default=None,
                   help="cache log-mels in files here (keyed by frontend and data settings; default: in memory)")
    o.add_argument("--no-tflite", action="store_true", help="skip the model.tflite export")
    return p


def run(args: argparse.Namespace) -> None:
    train(TrainConfig.from_args(args), spec_from_args(args))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
