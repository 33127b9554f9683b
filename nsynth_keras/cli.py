"""What every command shares: the data flags (defined once), quiet logs, and one ``main`` wrapper
that turns the project's errors into a one-line message and the same exit codes everywhere.

Exit codes: 0 success, 1 the command ran but found a problem (a file it could not read, a model
below its threshold), 2 bad input or a refused action, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from nsynth_keras.core.config import SPLITS
from nsynth_keras.core.errors import ProjectError
from nsynth_keras.core.files import first_line
from nsynth_keras.core.settings import add_flags, given, number_type

# No TensorFlow at import: commands without data flags (render, prepare, web) answer --help at once; the data
# flags import the data wing (and TensorFlow) when a command adds them.
if TYPE_CHECKING:
    from nsynth_keras.data.datasets import DataSpec

EXPECTED_ERRORS = (ProjectError,)  # DataError, RunError, AudioError, ...


positive_float = number_type(float, above=0)  # seconds, ratios


def add_data_args(parser: argparse.ArgumentParser, *, split: str | None = None, extra: bool = False) -> None:
    """The data flags every command shares, made from DataSpec's and Filters' fields; ``extra``: also the
    extra-training-data flags (train and tune)."""
    from nsynth_keras.data.datasets import DataSpec
    from nsynth_keras.data.notes import DATA, Filters

    groups: dict = {}
    add_flags(parser, DataSpec, exclude=() if extra else DataSpec.EXTRA_FIELDS, groups=groups)
    add_flags(parser, Filters, groups=groups)
    if split is not None:
        groups[DATA].add_argument("--split", default=split, choices=SPLITS, help="split to read (default: %(default)s)")


def spec_from_args(args: argparse.Namespace, base: DataSpec | None = None) -> DataSpec:
    """The DataSpec of the data flags given, on top of ``base`` (default: DataSpec's defaults)."""
    from nsynth_keras.data.datasets import DataSpec
    from nsynth_keras.data.notes import Filters

    base = base or DataSpec()
    return dataclasses.replace(base, filters=dataclasses.replace(base.filters, **given(args, Filters)),
                               **given(args, DataSpec))


def quiet_logs() -> None:
    """Warnings and errors only, from Python's logging and absl (TF's converter logs at INFO)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # tf.get_logger(), without importing TF


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
    except Exception as err:
        if not _tensorflow_error(err):
            raise
        print(f"error: TensorFlow stopped: {first_line(err, 400)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if rc is None else rc


def _tensorflow_error(err: BaseException) -> bool:
    """Whether err is a tf.errors.OpError (only possible once TensorFlow is loaded)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(err, tf.errors.OpError)


def make_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"python -m nsynth_keras.{prog}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
