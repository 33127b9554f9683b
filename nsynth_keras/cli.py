"""What every command shares: the data flags (defined once), quiet logs, and one ``main`` wrapper
that turns the project's errors into a one-line message and the same exit codes everywhere.

Exit codes: 0 success, 1 the command ran but found a problem (a file it could not read, a model
below its threshold), 2 bad input or a refused action, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable

import tensorflow as tf  # the package's __init__ has already quietened TF's C++ start-up log

from nsynth_keras.audio import AudioError
from nsynth_keras.config import DEFAULT_DATA_DIR, SOURCES, SPLITS
from nsynth_keras.data import TFDS_CONFIGS, DataError, DataSpec, Filters
from nsynth_keras.runs import RunError, first_line

EXPECTED_ERRORS = (DataError, RunError, AudioError)


def finite_float(text: str) -> float:
    """An argparse type for every float flag: a finite number ('inf' and 'nan' are refused here, once)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (seconds, ratios)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def add_data_args(parser: argparse.ArgumentParser, *, split: str | None = None) -> None:
    """The data flags every command shares."""
    g = parser.add_argument_group("data")
    g.add_argument("--source", choices=("jsonwav", "tfds"), default="jsonwav",
                   help="jsonwav: the official NSynth json/wav layout; tfds: a prepared tensorflow-datasets nsynth "
                        "(default: %(default)s)")
    g.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help="json/wav: folder holding nsynth-{train,valid,test}/; tfds: the TFDS data_dir "
                        "(default: %(default)s)")
    g.add_argument("--tfds-config", default="full", choices=TFDS_CONFIGS,
                   help="TFDS nsynth config (default: %(default)s)")
    if split is not None:
        g.add_argument("--split", default=split, choices=SPLITS, help="split to read (default: %(default)s)")
    g.add_argument("--max-examples", type=int, default=None, metavar="N",
                   help="use at most N notes per split (a seeded sample; for smoke runs; default: all)")
    g.add_argument("--instrument-source", nargs="+", choices=SOURCES, default=None,
                   help="keep only notes of these instrument sources (default: all)")
    g.add_argument("--pitch-min", type=int, default=None, help="lowest MIDI pitch kept (default: no limit)")
    g.add_argument("--pitch-max", type=int, default=None, help="highest MIDI pitch kept (default: no limit)")
    g.add_argument("--strict", action="store_true", help="stop at the first bad note instead of skipping it")


def add_extra_train_args(parser: argparse.ArgumentParser) -> None:
    """Extra training data (e.g. notes from python -m nsynth_keras.render): train and tune only."""
    g = parser.add_argument_group("extra training data (train split only; never valid or test)")
    g.add_argument("--extra-train", nargs="+", default=[], metavar="DIR",
                   help="json/wav folders whose nsynth-train/ notes are mixed into training (default: none)")
    g.add_argument("--extra-ratio", type=positive_float, default=None, metavar="R",
                   help="use at most R extra notes per real training note, a seeded sample (default: all)")
    g.add_argument("--extra-balance", action="store_true",
                   help="sample the extra notes evenly over families (within --extra-ratio if given)")
    g.add_argument("--drop-overlap", action="store_true",
                   help="leave out extra notes that overlap valid/test (note name, instrument or identical audio) "
                        "and count them in config.json (default: refuse to train with any overlap)")
    g.add_argument("--select-extra", nargs="+", default=[], metavar="DIR",
                   help="json/wav folders whose nsynth-valid notes (rendered instruments held out of training) join "
                        "the real valid notes to choose the best epoch; scored apart, as not NSynth (default: none)")


def spec_from_args(args: argparse.Namespace) -> DataSpec:
    if args.max_examples is not None and args.max_examples < 1:
        raise DataError("--max-examples must be at least 1")
    extra_ratio = getattr(args, "extra_ratio", None)
    filters = Filters(
        tuple(args.instrument_source) if args.instrument_source else None,
        args.pitch_min,
        args.pitch_max,
        args.max_examples,
    )
    return DataSpec(args.source, args.data_dir, args.tfds_config, filters, args.strict,
                    tuple(getattr(args, "extra_train", ())), extra_ratio, getattr(args, "extra_balance", False),
                    getattr(args, "drop_overlap", False), tuple(getattr(args, "select_extra", ())))


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the flags that argv sets explicitly (not left at their defaults)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                kwargs["action"] = "store_true" if isinstance(action, argparse._StoreTrueAction) else "store_false"
            else:
                kwargs["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kwargs)
    known, _ = probe.parse_known_args(sys.argv[1:] if argv is None else argv)
    return set(vars(known))


def quiet_logs() -> None:
    """Warnings and errors only, from Python's logging and absl (TF's converter logs at INFO)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.ERROR)
    tf.get_logger().setLevel(logging.ERROR)


def run_command(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None],
                argv: list[str] | None = None) -> int:
    """Parse argv and run body(args); every command's main is this, so every command fails the same way."""
    args = parser.parse_args(argv)
    quiet_logs()
    try:
        rc = body(args)
    except EXPECTED_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # bad flag values, unwritable folders: still one line
        print(f"error: {first_line(err, 400)}", file=sys.stderr)
        return 2
    except tf.errors.OpError as err:
        print(f"error: TensorFlow stopped: {first_line(err, 400)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if rc is None else rc


def make_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"python -m nsynth_keras.{prog}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
