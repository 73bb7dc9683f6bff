"""Numeric checks of a calibration cache read from disk, before a Q/DQ graph is built on it.

The writer turns every range into a Q/DQ scale (amax / 127). A NaN, zero, negative, 1e30 or
1e-30 range still gives a graph that passes the TensorRT lint, but every activation
through it is garbage (0% token agreement); an Inf one crashes the runtime later. So a
loaded cache must hold, for every tensor:

- ``all`` (the range over every step): finite and within ``AMAX_RANGE``;
- per-step ranges: finite and within ``AMAX_RANGE``, or exactly 0 (a step that saw nothing,
  which the per-step writer maps to the shared scale);
- attention statistics (mean attention each key position receives, over queries): finite
  and within [0, 1] (they are averages of softmax probabilities), so shift-and-sum never
  selects its tokens from NaN;
- weight scales: finite and positive;
- settings: the types and ranges the calibration itself accepts.

``AMAX_RANGE``: the activations a float32 VAR feeds its GEMMs are LayerNorm'd or bounded
(O(0.1)..O(100); the embedded model's span 0.56..14.7); 1e-6 and 1e6 leave four orders of
magnitude of headroom each way while refusing values that can only come from corruption:
below, every activation clips to +-127 steps; above, every activation rounds to 0.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from sasq.errors import UserError

AMAX_RANGE = (1e-6, 1e6)
_ATTN_TOL = 1e-4  # float round-off of a mean of probabilities
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"{path}: calibration cache {why}; recalibrate")


def _check_amax(path: Path, name: str, v: float, zero_ok: bool) -> None:
    lo, hi = AMAX_RANGE
    if zero_ok and v == 0.0:
        return
    if not math.isfinite(v) or not lo <= v <= hi:
        raise _bad(path, f"range of {name} is {v!r}, outside the sane {lo:g}..{hi:g}")


def check_settings(path: Path, s) -> None:
    """Types and ranges of ``CalibSettings`` read from a file."""
    p = s.percentile
    if isinstance(p, bool) or not isinstance(p, int | float) or not (0 < p <= 100):
        raise _bad(path, f"settings.percentile is {p!r:.20}, expected a number in (0, 100]")
    for field in ("num_samples", "seed"):
        v = getattr(s, field)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _bad(path, f"settings.{field} is {v!r:.20}, expected an integer >= 0")


def validate_cache(cache, path: str | Path) -> None:
    """``UserError`` (one line, ending in 'recalibrate') naming the first bad number."""
    path = Path(path)
    if not _SHA256.fullmatch(cache.model_hash):
        raise _bad(path, "model_hash is not a lowercase hex sha256")
    check_settings(path, cache.settings)
    for name, r in cache.ranges.items():
        _check_amax(path, name, r.amax, zero_ok=False)
        for si, v in enumerate(r.steps):
            _check_amax(path, f"{name} at step {si}", v, zero_ok=True)
    for layer, steps in cache.attention.items():
        for si, a in enumerate(steps):
            arr = np.asarray(a, dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise _bad(path, f"attention of {layer} at step {si} is not finite")
            if arr.size and (arr.min() < -_ATTN_TOL or arr.max() > 1 + _ATTN_TOL):
                raise _bad(path, f"attention of {layer} at step {si} is outside [0, 1]")
    for name, w in cache.weight_scales.items():
        w = np.asarray(w)
        if w.dtype.kind != "f" or not np.all(np.isfinite(w)) or not np.all(w > 0):
            raise _bad(path, f"weight scales of {name} must be finite positive floats")
