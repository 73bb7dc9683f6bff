"""TensorRT engines of the step graph, built through polygraphy's loaders.

One engine serves every scale: it holds one optimization profile per scale step with
min = opt = max (the shapes of that step are fixed: l new tokens, P cached ones), so the
builder tunes each step for its exact shapes. A Q/DQ graph is built strongly typed (the
precision of every tensor comes from the graph: int8 where Q/DQ says so); an FP graph is
built with the fp16 flag. A timing cache file speeds up rebuilds, and the engine cache
reuses a plan only when its key (sha256 of the ONNX, TensorRT version, GPU name, build
settings) matches the sidecar ``<plan>.json``; anything else is refused unless rebuilt.

tensorrt and CUDA are imported on first use only (``require_tensorrt``), so every other
command works on a machine without them.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from sasq.errors import UserError
from sasq.exporter.manifest import Manifest, sha256_file, verify

TRT_MISSING = "TensorRT is not installed: pip install 'sasq[gpu]'"
GPU_MISSING = "no CUDA GPU is visible to this process (TensorRT needs one)"


class GpuUnavailableError(UserError):
    """TensorRT or a GPU is missing: reported as exactly that, one line, exit 2."""


def require_tensorrt():
    """The tensorrt module, or ``GpuUnavailableError`` saying what is missing."""
    if importlib.util.find_spec("tensorrt") is None:
        raise GpuUnavailableError(TRT_MISSING)
    import torch

    if not torch.cuda.is_available():
        raise GpuUnavailableError(GPU_MISSING)
    import tensorrt as trt

    return trt


@dataclass(frozen=True)
class EngineConfig:
    batch: int = 1  # images; the step runs 2 x batch rows (CFG)
    strongly_typed: bool | None = None  # None: strongly typed iff the graph has Q/DQ
    builder_optimization_level: int = 3
    workspace_mb: int = 4096
    timing_cache: Path | None = None


def scale_shapes(manifest: Manifest, batch: int) -> list[dict[str, tuple[int, ...]]]:
    """Input shapes of the step graph at each scale, for one profile per scale."""
    d = manifest.dims
    rows = 2 * batch
    shapes = []
    for s in manifest.scales:
        shape = {
            "x_BlC": (rows, s.l, d["embed_dim"]),
            "mod_BMC": (rows, d["modulation_rows"], d["embed_dim"]),
        }
        shape |= {c.input: c.shape_at(s.si, rows) for c in manifest.step_cache()}
        shapes.append(shape)
    return shapes


def engine_key(onnx_path: Path, trt_version: str, gpu: str, cfg: EngineConfig) -> dict:
    settings = asdict(cfg) | {"timing_cache": None}  # where the cache lives is not identity
    return {
        "onnx_sha256": sha256_file(onnx_path),
        "tensorrt": trt_version,
        "gpu": gpu,
        "settings": settings,
    }


def check_cached(plan: Path, key: dict, rebuild: bool) -> bool:
    """True when ``plan`` can be reused for ``key``; False when it must be (re)built.
    A plan made for another model, TensorRT or GPU is refused unless ``rebuild``."""
    sidecar = plan.with_name(plan.name + ".json")
    if not plan.exists():
        return False
    if rebuild:
        return False
    try:
        old = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        raise UserError(f"{plan}: engine without a valid {sidecar.name}; use --rebuild") from None
    if old != key:
        what = [k for k in key if old.get(k) != key[k]]
        raise UserError(
            f"{plan}: stale or foreign engine (different {', '.join(what)}); use --rebuild"
        )
    return True


def _has_qdq(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def build_engine(
    onnx_dir: str | Path, plan: str | Path, cfg: EngineConfig, rebuild: bool = False
) -> Path:
    """Build (or reuse) the step engine of an export folder; returns the plan path."""
    trt = require_tensorrt()
    import torch
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        NetworkFromOnnxPath,
        Profile,
        SaveEngine,
    )

    onnx_dir, plan = Path(onnx_dir), Path(plan)
    manifest = verify(onnx_dir)
    onnx_path = onnx_dir / manifest.graphs["step"].file
    key = engine_key(onnx_path, trt.__version__, torch.cuda.get_device_name(0), cfg)
    if check_cached(plan, key, rebuild):
        return plan
    typed = _has_qdq(onnx_path) if cfg.strongly_typed is None else cfg.strongly_typed
    profiles = []
    for shapes in scale_shapes(manifest, cfg.batch):
        p = Profile()
        for name, shape in shapes.items():
            p.add(name, min=shape, opt=shape, max=shape)
        profiles.append(p)
    config = CreateConfig(
        fp16=not typed,
        profiles=profiles,
        builder_optimization_level=cfg.builder_optimization_level,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: cfg.workspace_mb << 20},
        load_timing_cache=str(cfg.timing_cache) if cfg.timing_cache else None,
    )
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=typed)
    engine = EngineFromNetwork(
        network,
        config=config,
        save_timing_cache=str(cfg.timing_cache) if cfg.timing_cache else None,
    )
    plan.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.with_name(plan.name + ".tmp")
    SaveEngine(engine, path=str(tmp))()
    os.replace(tmp, plan)
    side = plan.with_name(plan.name + ".json.tmp")
    side.write_text(json.dumps(key, indent=2) + "\n")
    os.replace(side, plan.with_name(plan.name + ".json"))
    return plan
