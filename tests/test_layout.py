"""The house's plan: commands at the top, the library in wings below them, every import pointing down;
the commands without data flags answer --help without TensorFlow; one door (nsynth-keras) to every command."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys

import pytest

from nsynth_keras import __main__ as door

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "nsynth_keras")
# Lowest first: a wing may import its own modules and the wings before it, never one after it.
WINGS = ("core", "data", "sounds", "models", "deploy", "reports", "learn")
TOP = len(WINGS)  # the commands, cli.py and the package itself


def layer(module: str) -> int:
    parts = module.split(".")
    if module == "nsynth_keras":
        return -1  # the package's __init__: the version and TF's log level, below everything
    return WINGS.index(parts[1]) if len(parts) > 1 and parts[1] in WINGS else TOP


def imports(path: str) -> set[str]:
    """Every nsynth_keras module a file imports, at any depth (lazy imports count too)."""
    found, known = set(), modules()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nsynth_keras"):
            # from nsynth_keras.sounds import synth: the module synth; from nsynth_keras import __version__: the package
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                         for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nsynth_keras"))
    return found


@functools.cache
def modules() -> dict[str, str]:
    """Every module of the package -> its file (read once: imports() asks for every file)."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(folder, name)
    return out


def test_the_library_lives_in_wings_and_the_commands_at_the_top():
    top = {m for m in modules() if m.count(".") == 1}
    assert {f"nsynth_keras.{w}" for w in WINGS} <= top
    loose = top - {f"nsynth_keras.{w}" for w in WINGS} - {f"nsynth_keras.{c}" for c in door.COMMANDS}
    assert loose == {"nsynth_keras.cli", "nsynth_keras.__main__"}, "a library module outside the wings"


def test_every_import_points_down():
    upward = []
    for module, path in modules().items():
        for target in imports(path):
            if layer(module) < TOP and layer(target) > layer(module):
                upward.append(f"{module} imports {target}")
            if layer(module) < TOP and layer(target) == TOP:
                upward.append(f"library module {module} imports the command layer ({target})")
    assert not upward, "\n".join(upward)


def test_the_wings_say_what_they_are_for():
    for wing in WINGS:
        doc = ast.get_docstring(ast.parse(open(os.path.join(PACKAGE, wing, "__init__.py")).read()))
        assert doc and len(doc) > 80, f"nsynth_keras/{wing}/__init__.py needs a docstring saying its job"


@pytest.mark.parametrize("command", ["render", "web", "prepare"])
def test_help_without_tensorflow(command):
    code = (f"import sys; from nsynth_keras import {command}\n"
            "try:\n"
            f"    {command}.main(['--help'])\n"
            "except SystemExit as e:\n"
            "    rc = e.code\n"
            "print('RC', rc, 'TF', 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "RC 0 TF False" in out.stdout, out.stdout[-500:] + out.stderr[-1000:]
    assert "usage:" in out.stdout


def test_the_door_lists_and_runs_every_command(capsys):
    assert door.main([]) == 2
    listing = capsys.readouterr().out
    for name in door.COMMANDS:
        assert f"  {name} " in listing
        assert callable(__import__(f"nsynth_keras.{name}", fromlist=["main"]).main)
    with pytest.raises(SystemExit) as stop:
        door.main(["tflite-check", "--help"])
    assert stop.value.code == 0 and "python -m nsynth_keras.tflite_check" in capsys.readouterr().out
    assert door.main(["trian"]) == 2 and "unknown command 'trian'" in capsys.readouterr().err


def test_the_console_entry_point_is_the_door():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        scripts = f.read().split("[project.scripts]")[1].split("\n[")[0]
    assert 'nsynth-keras = "nsynth_keras.__main__:main"' in scripts
