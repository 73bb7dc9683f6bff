"""The calibration cache: ranges (and shift-and-sum statistics) saved for reuse and review.

One JSON file, versioned, with sorted keys, one line per scalar list and floats written as
their shortest round-trip repr, so two caches diff line by line and a reload is bit-exact:

    {"format_version": 1, "model_hash": "<sha256 of the FP ONNX>",
     "settings": {"observer": "entropy", "percentile": 99.99, "num_samples": 64, ...},
     "ranges": {"<tensor>": {"all": 3.2, "steps": [0.5, 1.1, ...]}},
     "attention": {"<layer>": [[step 0: attention each key position receives], ...]},
     "weight_scales": {"file": "<stem>.<sha256[:16]>.npz", "sha256": "..."} | null,
     "warnings": ["<tensor>: dropped 3 non-finite values ..."]}

Per-channel weight scales are arrays, so they go to an .npz beside the JSON, named by and
checked against its sha256. Writes are atomic (temporary file in the same folder, then
``os.replace``): a crash never leaves a half-written cache. Loading a cache made for
another model (by hash) or by another format version is refused with a one-line
``UserError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sasq.calib.observers import ObserverMethod
from sasq.calib.resample import ResampleMode
from sasq.calib.selection import SelectionMethod
from sasq.calib.validate import validate_cache
from sasq.errors import UserError
from sasq.exporter.plain_names import check_plain_name
from sasq.untrusted import json_loads, read_capped

FORMAT_VERSION = 1
# The most a real cache holds. Its bulk is the attention lists: per AV node and step, one
# float (up to ~24 characters) per key position so far; VAR-d36 at 512 px writes about
# 36 x 4,675 x 24 = 4 MB. 128 MB leaves room for models 30 times that while a refused file
# is never read (a 2 GB one was once read whole before being refused: 4.5 GB of memory).
MAX_CACHE_BYTES = 128 << 20


@dataclass(frozen=True)
class CalibSettings:
    observer: ObserverMethod = ObserverMethod.MINMAX
    percentile: float = 99.99
    num_samples: int = 0
    resample: ResampleMode = ResampleMode.NONE
    selection: SelectionMethod = SelectionMethod.ALL
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "observer", ObserverMethod(self.observer))
        object.__setattr__(self, "resample", ResampleMode(self.resample))
        object.__setattr__(self, "selection", SelectionMethod(self.selection))


@dataclass(frozen=True)
class TensorRange:
    """amax over every scale step ("all" in the JSON) and per step (static token-wise)."""

    amax: float
    steps: tuple[float, ...] = ()


@dataclass(frozen=True, eq=False)
class CalibCache:
    model_hash: str
    settings: CalibSettings
    ranges: Mapping[str, TensorRange]
    attention: Mapping[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)
    weight_scales: Mapping[str, np.ndarray] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibCache):
            return NotImplemented
        ws, wo = self.weight_scales, other.weight_scales
        return (
            _as_json(self, None) == _as_json(other, None)
            and ws.keys() == wo.keys()
            and all(np.array_equal(ws[k], wo[k]) for k in ws)
        )


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (the FP ONNX the ranges were measured on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----- writing -----


def _as_json(cache: CalibCache, arrays: dict | None) -> dict:
    s = cache.settings
    return {
        "format_version": cache.format_version,
        "model_hash": cache.model_hash,
        "settings": {
            "observer": s.observer.value,
            "percentile": float(s.percentile),
            "num_samples": int(s.num_samples),
            "resample": s.resample.value,
            "selection": s.selection.value,
            "seed": int(s.seed),
        },
        "ranges": {
            name: {"all": float(r.amax), "steps": [float(v) for v in r.steps]}
            for name, r in cache.ranges.items()
        },
        "attention": {
            layer: [[float(v) for v in step] for step in steps]
            for layer, steps in cache.attention.items()
        },
        "weight_scales": arrays,
        "warnings": list(cache.warnings),
    }


def _encode(obj: Any, indent: int = 0) -> str:
    """JSON with sorted keys, dicts one key per line, lists of scalars on one line."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_encode(obj[k], indent + 1)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, dict | list) for v in obj):
            return "[" + ", ".join(_encode(v) for v in obj) + "]"
        return "[\n" + ",\n".join(inner + _encode(v, indent + 1) for v in obj) + "\n" + pad + "]"
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"calibration cache values must be finite, got {obj}")
        return repr(obj)
    return json.dumps(obj)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Callable[[Any], None], binary: bool) -> None:
    """Write ``path`` under a temporary name and rename it. mkstemp creates the temporary
    file 0600; it is given the mode a plain ``open`` would (0666 less the umask), like every
    other output, before it takes the final name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_cache(cache: CalibCache, path: str | Path) -> None:
    """Write ``path`` atomically, and the weight scales beside it as
    ``<stem>.<sha256[:16]>.npz``.

    Everything is serialised before anything is written, so a bad value (NaN, Inf) leaves
    the previous files untouched. The .npz is named by its content, so a failure between
    the two writes leaves the old JSON with its old .npz, still a valid pair; superseded
    .npz files of this cache are removed only once the new JSON is in place."""
    path = Path(path)
    arrays, npz_bytes, npz = None, b"", None
    if cache.weight_scales:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in sorted(cache.weight_scales.items())})
        npz_bytes = buf.getvalue()
        sha = hashlib.sha256(npz_bytes).hexdigest()
        npz = path.with_name(f"{path.stem}.{sha[:16]}.npz")
        arrays = {"file": npz.name, "sha256": sha}
    text = _encode(_as_json(cache, arrays)) + "\n"
    if npz is not None:
        _atomic_write(npz, lambda f: f.write(npz_bytes), binary=True)
    _atomic_write(path, lambda f: f.write(text), binary=False)
    stale = re.compile(re.escape(path.stem) + r"\.[0-9a-f]{16}\.npz")
    for old in path.parent.iterdir():
        if old != npz and stale.fullmatch(old.name):
            old.unlink(missing_ok=True)


# ----- reading -----


def _malformed(path: Path, why: str) -> UserError:
    return UserError(f"{path}: malformed calibration cache ({why}); recalibrate")


def _floats(path: Path, values: Any, what: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise _malformed(path, f"{what} must be a list of numbers")
    return tuple(float(v) for v in values)


def _load_arrays(path: Path, meta: Any) -> dict[str, np.ndarray]:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not {"file", "sha256"} <= meta.keys():
        raise _malformed(path, "weight_scales must name a file and its sha256")
    npz = path.parent / check_plain_name(meta["file"], path, "weight scales file")
    if not npz.is_file():
        raise UserError(f"{path}: weight scales file {npz.name} is missing")
    if file_sha256(npz) != meta["sha256"]:
        raise UserError(f"{path}: {npz.name} does not match this cache (sha256 differs)")
    with np.load(npz, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_cache(path: str | Path, expect_model_hash: str | None = None) -> CalibCache:
    """Read a cache; ``UserError`` (one line) if it is missing, corrupt, of another format
    version, or made for another model than ``expect_model_hash``."""
    path = Path(path)
    data = read_capped(path, "calibration cache", MAX_CACHE_BYTES)  # a fifo or 2 GB: refused
    try:
        d = json_loads(data)
    except ValueError as e:  # invalid JSON or UTF-8, or nested too deeply to parse
        raise UserError(f"{path}: not a calibration cache (invalid JSON: {e})") from None
    if not isinstance(d, dict):
        raise _malformed(path, "top level is not an object")
    version = d.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:  # true == 1 in Python
        raise UserError(
            f"{path}: calibration cache format_version {version!r} is not supported "
            f"(this sasq reads {FORMAT_VERSION}); recalibrate"
        )
    model_hash = d.get("model_hash")
    if not isinstance(model_hash, str):
        raise _malformed(path, "no model_hash")
    if expect_model_hash is not None and model_hash != expect_model_hash:
        raise UserError(
            f"{path}: calibration cache is for another model (sha256 {model_hash[:12]}..., "
            f"this one is {expect_model_hash[:12]}...); recalibrate"
        )
    try:
        settings = CalibSettings(**d["settings"])
        ranges_in, attention_in = d["ranges"], d.get("attention", {})
        warnings = tuple(str(w) for w in d.get("warnings", []))
    except (KeyError, TypeError, ValueError) as e:
        raise _malformed(path, f"{type(e).__name__}: {e}") from None
    if not isinstance(ranges_in, dict) or not isinstance(attention_in, dict):
        raise _malformed(path, "ranges and attention must be objects")
    ranges = {}
    for name, r in ranges_in.items():
        amax = r.get("all") if isinstance(r, dict) else None
        if isinstance(amax, bool) or not isinstance(amax, int | float):  # bool is an int
            raise _malformed(path, f"range of {name} has no number 'all'")
        ranges[name] = TensorRange(float(r["all"]), _floats(path, r.get("steps", []), name))
    attention = {}
    for layer, steps in attention_in.items():
        if not isinstance(steps, list):
            raise _malformed(path, f"attention of {layer} must be a list per step")
        attention[layer] = tuple(_floats(path, s, f"attention of {layer}") for s in steps)
    cache = CalibCache(
        model_hash=model_hash,
        settings=settings,
        ranges=ranges,
        attention=attention,
        weight_scales=_load_arrays(path, d.get("weight_scales")),
        warnings=warnings,
        format_version=version,
    )
    validate_cache(cache, path)  # every number finite, positive, in a sane range
    return cache
