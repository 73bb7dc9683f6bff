"""Flags whose default (and, for an enum, choices) come from a config dataclass's field, so
each default is written once: in the config the Python API takes."""

from __future__ import annotations

import argparse
import dataclasses
from enum import Enum
from typing import Any


def _default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name``, as the config holds it."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise AttributeError(f"{cls.__name__} has no field {name!r}")
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{cls.__name__}.{name} has no default")


def option(p: argparse.ArgumentParser, flag: str, cls: type, name: str, **kw: Any) -> None:
    """``flag`` defaulting to ``cls.name``; an enum default gives its value and the choices,
    and a False default makes a switch (``store_true``)."""
    default = _default(cls, name)
    if isinstance(default, Enum):
        kw.setdefault("choices", [m.value for m in type(default)])
        default = default.value
    if default is False and "type" not in kw and "action" not in kw:
        kw["action"] = "store_true"
    p.add_argument(flag, default=default, **kw)
