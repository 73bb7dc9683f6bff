"""What a command shows while it works: progress bars, one line per long stage, the closing
"wrote" line, and the silencing of ONNX Runtime's own log noise.

It lives at the package root so every layer (the exporter's graphs, calibration's rollouts
and observers, the tools' loops) shows progress the same way without importing from
``sasq.tools``. Bars and stage lines go to stderr and follow tqdm's convention: shown on a
terminal only, so pipes, logs and tests stay clean; ``sasq --quiet`` turns them off (and the
"wrote" line with them). Results stay on stdout.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """``sasq --quiet``: no bars, no stage lines, no "wrote" line (errors still print)."""
    global _quiet
    _quiet = quiet


def shown() -> bool:
    """Whether bars and stage lines print: not quiet and stderr is a terminal."""
    if _quiet:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def bar(items: Iterable[T] | None, desc: str, total: int | None = None, enabled: bool = True):
    """``items`` with a tqdm bar on stderr; ``enabled=False`` for a caller's own off switch
    (a config's ``progress``), e.g. a stage nested in a larger one that has its own bar.
    ``items=None`` with a ``total``: a manual bar (``update()``, ``set_postfix_str``)."""
    return tqdm(items, desc=desc, total=total, disable=not (enabled and shown()), file=sys.stderr)


def stage(what: str, enabled: bool = True) -> None:
    """One line for a long step without a natural loop ("exporting the FP graphs ...")."""
    if enabled and shown():
        print(f"{what} ...", file=sys.stderr, flush=True)


def note(command: str, text: str) -> None:
    """One line the user should see, terminal or not ("resized 64x64 -> 16x16")."""
    if not _quiet:
        print(f"sasq {command}: {text}", file=sys.stderr)


def wrote(command: str, *paths: object) -> None:
    """The last line of a command: what it wrote (stderr, so stdout stays parseable)."""
    if not _quiet:
        print(f"sasq {command}: wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)


@contextlib.contextmanager
def quiet_ort_logging() -> Iterator[None]:
    """Silence ``onnxruntime.quantization``'s warnings for the duration of a call only.

    It logs through the root logger (``logging.warning("Axis 1 is out-of-range ...")``,
    "Please consider to run pre-processing before quantization"), and the module-level
    ``logging.warning`` installs a stderr handler on a handler-less root as a side effect.
    Here the root logger is raised to ERROR and given a NullHandler for the call (so no
    handler gets installed), then both are restored: nothing else's logging changes.
    """
    root = logging.getLogger()
    level = root.level
    null = logging.NullHandler()
    root.addHandler(null)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(null)
