"""How far a timing can be trusted: repeats summarized as median and spread, the machine's
load average, and the warnings every timing command (bench, profile, demo) prints alike.

A row whose (max - min) / median exceeds ``SPREAD_WARN``, or a machine whose 1-minute load
average before the run exceeds ``LOAD_WARN``, is flagged: its ratios are not to be trusted.
"""

from __future__ import annotations

import os
import statistics

SPREAD_WARN = 0.10
LOAD_WARN = 0.5


def loadavg() -> float | None:
    """The 1-minute load average, rounded to 2 decimals (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # not available on this platform
        return None


def spread(values: list[float]) -> float:
    """(max - min) / median: 0 for steady repeats, 0.1 = 10% of the median."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else 0.0


def summary(values: list[float]) -> dict:
    """median, min, max and spread of repeated timings."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "spread": spread(values),
    }


def load_warning(load_before: float | None) -> list[str]:
    if load_before is None or load_before <= LOAD_WARN:
        return []
    return [
        f"1-min load average was {load_before:.2f} before the run: other processes were "
        "using the CPU; rerun on a quiet machine"
    ]


def spread_warning(what: str, s: dict, unit: str = "ms") -> list[str]:
    """A warning for ``what`` when its repeats spread more than ``SPREAD_WARN``."""
    if s["spread"] <= SPREAD_WARN:
        return []
    return [
        f"{what}: spread {100 * s['spread']:.0f}% of the median (min {s['min']:.1f}, "
        f"max {s['max']:.1f} {unit})"
    ]


def default_threads() -> int:
    """Half the logical CPUs (the physical cores where SMT doubles them), at least one:
    every logical core measured unsteady on a shared machine (oversubscribed OpenMP
    threads spin; torch steps swung 100x with all cores against one)."""
    return max(1, (os.cpu_count() or 2) // 2)
