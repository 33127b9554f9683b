"""Config dataclasses -> command-line flags, declared once.

A field made with ``setting(default, help, ...)`` carries its help, choices and flag name; ``add_flags``
turns every such field of a dataclass into an argparse flag, and ``given`` reads back only the fields the
user set, so a command builds its config as ``replace(base, **given(args, Config))`` where the base is the
dataclass defaults, a recorded config (``--config run/config.json``) or a tuning project's best trial.
(The pattern of Hugging Face's HfArgumentParser, on plain dataclasses.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from typing import Any

from nsynth_keras.core.errors import SettingsError

META = "flag"  # the metadata key of a field that is a flag


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
            flag: str | None = None, metavar: str | None = None, group: str = "", above: float | None = None,
            at_least: float | None = None, below: float | None = None, at_most: float | None = None) -> Any:
    """A dataclass field that is also a command-line flag (``--<name>`` unless ``flag`` says otherwise).
    ``above``/``at_least``/``below``/``at_most`` bound numbers (checked at parse time, with the flag's name)."""
    meta = {META: {"help": help, "choices": choices, "flag": flag, "metavar": metavar, "group": group,
                   "above": above, "at_least": at_least, "below": below, "at_most": at_most}}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple default, or a default_factory")
    return dataclasses.field(default=default, metadata=meta)


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata[META]["flag"] or "--" + f.name.replace("_", "-")


def flag_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if META in f.metadata]


INT_LIMIT = 2**63  # every integer setting fits an int64 (TF's widest), whatever its own bounds


def bound_error(value: float, above: float | None = None, at_least: float | None = None,
                below: float | None = None, at_most: float | None = None) -> str | None:
    """Why a number breaks its bounds (None if it does not): one wording for flags and settings files."""
    if not math.isfinite(value):
        return "is not a finite number"
    if above is not None and not value > above:
        return f"must be above {_bound(above)}"
    if at_least is not None and value < at_least:
        return f"must be at least {_bound(at_least)}"
    if below is not None and not value < below:
        return f"must be below {_bound(below)}"
    if at_most is not None and value > at_most:
        return f"must be at most {_bound(at_most)}"
    if isinstance(value, int) and not -INT_LIMIT < value < INT_LIMIT:
        return f"is out of range (at most {INT_LIMIT - 1})"
    return None


def _bound(value: float) -> str:
    """A bound as a person reads it: 4294967296, not 4.29497e+09; 0.5 stays 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def number_type(kind: type, above: float | None = None, at_least: float | None = None,
                below: float | None = None, at_most: float | None = None):
    """An argparse type: a finite int or float, optionally bounded."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        problem = bound_error(value, above, at_least, below, at_most)
        if problem:
            raise argparse.ArgumentTypeError(f"{text!r} {problem}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _base(hint) -> tuple[type, bool]:
    """(the value type, whether the field is a tuple of them) of an annotation like ``int | None``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return _base(args[0])
    if typing.get_origin(hint) is tuple:
        return args[0], True
    return hint, False


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return str(value)


def add_flags(parser: argparse.ArgumentParser, cls, *, exclude: tuple[str, ...] = (),
              groups: dict[str, argparse._ArgumentGroup] | None = None) -> None:
    """One flag per ``setting`` field of cls; every default is SUPPRESS, so ``given`` sees only what was set."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    groups = {} if groups is None else groups
    for f in flag_fields(cls):
        if f.name in exclude:
            continue
        m = f.metadata[META]
        title = m["group"]
        if title and title not in groups:
            groups[title] = parser.add_argument_group(title)
        target = groups.get(title, parser)
        kind, many = _base(hints[f.name])
        default = getattr(defaults, f.name)
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        name = flag_name(f)
        if kind is bool:
            if default:  # a setting that is on by default gets a --no-... flag
                name = m["flag"] or "--no-" + f.name.replace("_", "-")
                kw["action"] = "store_false"
            else:
                kw["action"] = "store_true"
            target.add_argument(name, help=m["help"], **kw)
            continue
        if kind in (int, float):
            kw["type"] = number_type(kind, m["above"], m["at_least"], m["below"], m["at_most"])
        if many:
            kw["nargs"] = "+"
        if m["choices"]:
            kw["choices"] = m["choices"]
        if m["metavar"]:
            kw["metavar"] = m["metavar"]
        listed = f"; choose from {', '.join(map(str, m['choices']))}" if m["choices"] and m["metavar"] else ""
        target.add_argument(name, help=f"{m['help']}{listed} (default: {_shown(default)})", **kw)


def given(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields of cls the command line set, converted to the field types (lists become tuples)."""
    out = {}
    for f in flag_fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def value_error(f: dataclasses.Field, hint, value) -> str | None:
    """Why a recorded value (JSON) is not valid for a setting field, in the words the flag's parser uses;
    None if it is. Types are strict: "3" is not an integer, 1.5 is not an integer, "false" is not a boolean."""
    kind, many = _base(hint)
    optional = type(None) in typing.get_args(hint)
    if value is None:
        return None if optional else "must not be null"
    if many:
        if not isinstance(value, (list, tuple)):
            return f"{json.dumps(value)} is not a list"
        return next((f"item {e}" for e in (value_error(f, kind, v) for v in value) if e), None)
    shown = json.dumps(value, default=repr) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    if kind is bool:
        return None if isinstance(value, bool) else f"{shown} is not true or false"
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{shown} is not an integer"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{shown} is not a number"
    elif kind is str:
        if not isinstance(value, str):
            return f"{shown} is not a string"
    if META not in f.metadata:
        return None
    m = f.metadata[META]
    if kind in (int, float):
        problem = bound_error(value, m["above"], m["at_least"], m["below"], m["at_most"])
        if problem:
            return f"{shown} {problem}"
    if m["choices"] and value not in m["choices"]:
        return f"{shown} is not one of {', '.join(map(str, m['choices']))}"
    return None


def check_fields(config: Any, where: str = "") -> None:
    """Every setting field of a config has a valid value (type, bounds, choices), as its flag would;
    a SettingsError names the field (``where`` prefixes it: a file's key path)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        if META in f.metadata:
            problem = value_error(f, hints[f.name], getattr(config, f.name))
            if problem:
                name = f"{where}{f.name}" if where else flag_name(f)
                raise SettingsError(f"{name}: {problem}")


def from_dict(cls, values: Any, where: str = "") -> Any:
    """A config from a recorded dict (config.json), checked field by field exactly like its flags:
    unknown keys and wrong types refused by name (``where``: the key path shown, e.g. "config.json settings.")."""
    if not isinstance(values, dict):
        raise SettingsError(f"{where.rstrip('.') or cls.__name__}: expected a JSON object, got "
                            f"{json.dumps(values)[:40]}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SettingsError(f"{where.rstrip('.') or cls.__name__}: unknown settings {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
        problem = value_error(fields[name], hints[name], value)
        if problem:
            raise SettingsError(f"{where}{name}: {problem}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
