"""The ``sasq`` subcommands, one module each (polygraphy's tools are the model).

A command module holds ``NAME`` (the subcommand), ``HELP`` (its one-line summary, also its
description), ``add_arguments(parser)`` (its flags; defaults from the config dataclasses
its API takes) and ``run(args) -> int`` (the exit status). Module level imports only the
CLI's own light modules: a command's config and library are imported inside
``add_arguments`` and ``run``, so ``sasq --help`` never loads torch or ONNX Runtime.
``MODULES`` is the order ``sasq --help`` lists them in; a new command is a module here and
a line in it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = (
    "generate",
    "edit",
    "export",
    "calibrate",
    "quantize",
    "bench",
    "build",
    "compare",
    "selftest",
    "eval",
    "train_default",
    "profile",
    "lint",
    "sweep_budget",
    "attention",
    "serve",
    "loadtest",
    "demo",
)


def load(module: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{module}")


def all_commands() -> dict[str, ModuleType]:
    """Every command module by its subcommand name, in ``MODULES`` order."""
    mods = [load(m) for m in MODULES]
    return {m.NAME: m for m in mods}
