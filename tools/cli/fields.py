"""Flags whose default (and, for an enum, choices) come from a config dataclass's field, so
each default is written once: in the config the Python API takes."""

from __future__ import annotations

import argparse
import dataclasses
from enum import Enum
from typing import Any


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (an enum as its value)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise AttributeError(f"{cls.__name__} has no field {name!r}")
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        raise ValueError(f"{cls.__name__}.{name} has no default")
    return value.value if isinstance(value, Enum) else value


def option(p: argparse.ArgumentParser, flag: str, cls: type, name: str, **kw: Any) -> None:
    """``flag`` defaulting to ``cls.name``; an enum default also gives the choices, and a
    False default makes a switch (``store_true``)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    raw = f.default if f.default is not dataclasses.MISSING else None
    default = field_default(cls, name)
    if isinstance(raw, Enum):
        kw.setdefault("choices", [m.value for m in type(raw)])
    if default is False and "type" not in kw and "action" not in kw:
        kw["action"] = "store_true"
    p.add_argument(flag, default=default, **kw)
