"""argparse ``type=`` functions: numbers checked where they enter, at the parser.

A bad value (``--batch 0``, ``--percentile 150``, ``--cfg nan``, ``--batch-sizes a``) gets
argparse's one-line usage error naming the flag, before any model is loaded, instead of
a traceback from deep inside torch minutes later. Upper bounds are far above any real
request; what fits in memory is checked separately, once the model's sizes are known
(``sasq.models.memory``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

MAX_COUNT = 2**31 - 1  # torch indexes with int64, but beyond this nothing fits anyway
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed's range (seed + batch index stays in it)


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def int_in(lo: int, hi: int = MAX_COUNT) -> Callable[[str], int]:
    """An integer in lo..hi."""

    def parse(text: str) -> int:
        v = _int(text)
        if not lo <= v <= hi:
            bound = f"at least {lo}" if hi == MAX_COUNT else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {v}")
        return v

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    """A finite float in [lo, hi] (or (lo, hi] with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        if v < lo or v > hi or (lo_open and v == lo):
            raise argparse.ArgumentTypeError(f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return v

    parse.__name__ = "number"
    return parse


def _comma_list(one: Callable[[str], Any], what: str, name: str) -> Callable[[str], tuple]:
    """A comma list whose every item ``one`` parses (and range-checks)."""

    def parse(text: str) -> tuple:
        items = [t.strip() for t in text.split(",")]
        if not text.strip() or any(not t for t in items):
            raise argparse.ArgumentTypeError(f"expected a comma list of {what}, got {text!r}")
        return tuple(one(t) for t in items)

    parse.__name__ = name
    return parse


def int_list(lo: int = 1, hi: int = MAX_COUNT) -> Callable[[str], tuple[int, ...]]:
    """A comma list of integers in lo..hi, e.g. ``1,8,32``."""
    return _comma_list(int_in(lo, hi), "integers", "integer list")


def float_list(lo: float = 0.0, hi: float = 1.0) -> Callable[[str], tuple[float, ...]]:
    """A comma list of finite floats in [lo, hi], e.g. ``0,0.01,0.05``."""
    return _comma_list(float_in(lo, hi), "numbers", "number list")


count = int_in(1)  # images, batch sizes, repeats
samples = int_in(1, 10**6)  # calibration / evaluation rollouts: a million is days of work
non_negative = int_in(0)  # warmup runs, training steps
threads = int_in(0, 4096)  # 0: the library's default (all cores)
seed = int_in(0, MAX_SEED)
cfg_scale = float_in(0.0, 100.0)
top_p = float_in(0.0, 1.0)  # 0: off
top_k = int_in(0, 1 << 20)  # 0: off; the model's vocabulary bounds it later
percentile = float_in(0.0, 100.0, lo_open=True)
tolerance = float_in(0.0, 1e6)
fraction = float_in(0.0, 1.0)
fractions = float_list(0.0, 1.0)
