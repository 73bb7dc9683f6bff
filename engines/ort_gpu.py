"""ONNX Runtime's CUDA and TensorRT execution providers with the options an export needs.

Without options, the TensorRT EP builds an engine for the shapes it first sees and builds
again whenever a later input is larger: the step graph's inputs grow at every scale, so a
generation would rebuild the engine once per scale, every run. So each graph gets one
explicit profile over everything the command will run (``trt_profile_{min,opt,max}_shapes``,
required for every dynamic input, "input:d1xd2,..."), and the engines and the timing
cache persist in a cache folder keyed by the graph's sha256. A Q/DQ graph needs
``trt_int8_enable`` on TensorRT 10 (explicit quantization is still gated by the INT8 flag
there); fp16 comes from the graph itself (``sasq export --dtype fp16``), never from
``trt_fp16_enable``, as TensorRT 11 has no weak typing. Sources: onnxruntime.ai's
TensorRT Execution Provider page (options, profile format) and the ORT change that added
explicit profiles (microsoft/onnxruntime#15546: min/max/opt "for all the dynamic shape
inputs").
"""

from __future__ import annotations

import os
from pathlib import Path

from sasq.engines.trt_plan import BatchRange
from sasq.exporter.manifest import GraphSpec, Manifest

Shape = tuple[int, ...]


def cache_root() -> Path:
    """Where ORT's TensorRT engines and timing caches persist: $SASQ_CACHE_DIR, else the
    XDG cache folder (~/.cache/sasq)."""
    if os.environ.get("SASQ_CACHE_DIR"):
        return Path(os.environ["SASQ_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sasq"


def graph_profile(manifest: Manifest, key: str, batch: BatchRange) -> dict[str, tuple[Shape, ...]]:
    """name -> (min, opt, max) for every input of graph ``key`` over all scales and the
    batch range: rows (``B2``) and images (``B``) from ``batch``, new tokens (``l``) from
    the scales, cache lengths from the cache's per-scale lengths (opt: the last scale)."""
    spec: GraphSpec = manifest.graphs[key]
    ls = [s.l for s in manifest.scales]
    sym = {
        "B2": (2 * batch.min, 2 * batch.opt, 2 * batch.max),
        "B": (batch.min, batch.opt, batch.max),
        "l": (min(ls), max(ls), max(ls)),
    }
    caches = {c.input: c for c in manifest.step_cache()}
    last = len(manifest.scales) - 1
    out = {}
    for t in spec.inputs:
        if t.name in caches:
            c = caches[t.name]
            rows = sym["B2"]
            out[t.name] = (c.shape_at(0, rows[0]), c.shape_at(last, rows[1]),
                           c.shape_at(last, rows[2]))  # fmt: skip
            continue
        dims = []
        for d in t.shape:
            if isinstance(d, int):
                dims.append((d, d, d))
            elif d in sym:
                dims.append(sym[d])
            else:
                raise RuntimeError(f"{spec.file}: input {t.name} has an unknown symbolic dim {d!r}")
        out[t.name] = tuple(tuple(x[i] for x in dims) for i in range(3))
    return out


def _shapes_option(profile: dict[str, tuple[Shape, ...]], i: int) -> str:
    return ",".join(f"{n}:{'x'.join(str(d) for d in s[i])}" for n, s in profile.items())


def tensorrt_options(
    profile: dict[str, tuple[Shape, ...]], cache_dir: Path, int8: bool, opt_level: int = 3
) -> dict[str, str]:
    """The TensorRT EP's options for one graph (ORT takes them as strings)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    opts = {
        "device_id": "0",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        "trt_builder_optimization_level": str(opt_level),
        "trt_int8_enable": "True" if int8 else "False",
    }
    if profile:
        opts |= {
            "trt_profile_min_shapes": _shapes_option(profile, 0),
            "trt_profile_opt_shapes": _shapes_option(profile, 1),
            "trt_profile_max_shapes": _shapes_option(profile, 2),
        }
    return opts


def cuda_options() -> dict[str, str]:
    return {"device_id": "0"}
