"""The CLI answers before loading the heavy libraries: `sasq --help`, `--version` and each
command's flags (so every argument error) import neither torch nor ONNX Runtime. What
that buys in milliseconds is a benchmark (scripts/cli_startup.py), not a test; which
modules load is the machine-independent part of it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sasq.tools.cli.commands import MODULES, all_commands

HEAVY = ("torch", "onnxruntime", "onnx", "matplotlib", "tensorrt", "pytriton")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return {m.split(".")[0] for m in json.loads(out.strip().splitlines()[-1])}


def test_top_level_help_and_version_load_nothing_heavy():
    for args in (["--help"], ["--version"], ["no-such-command"]):
        loaded = _loaded_after(f"from sasq.tools.cli import main\nmain({args!r})")
        assert not loaded & set(HEAVY), (args, loaded & set(HEAVY))


@pytest.mark.parametrize("name", list(all_commands()))
def test_a_commands_flags_load_nothing_heavy(name):
    loaded = _loaded_after(
        f"from sasq.tools.cli.entry import build_parser\nbuild_parser([{name!r}])"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_every_command_module_is_registered_and_named():
    cmds = all_commands()
    assert len(cmds) == len(MODULES)
    for name, mod in cmds.items():
        assert name == mod.NAME and mod.HELP and callable(mod.add_arguments)
        assert callable(mod.run)
