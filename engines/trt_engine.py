"""TensorRT engines of the step graph, built through polygraphy's loaders (or simulated).

One engine per step graph of the export (usually one), with one optimization profile per
scale it serves: the scale fixes the new and cached token counts, the batch ranges over
``EngineConfig.batch`` (min/opt/max images, 2x step rows for CFG), so a plan built once
serves every batch a user runs in that range. ``engines.trt_plan`` writes and checks the
sidecar that records what the plan was built from and for.

Every network is built strongly typed: TensorRT 11 has no FP16/INT8 builder flags and no
weakly typed networks, and on 10.x the flags would let TensorRT pick precisions the graph
does not state. The precision comes from the ONNX graph: int8/fp8 where Q/DQ say so, fp16
where sasq wrote the casts (``sasq export --dtype fp16`` / ``sasq quantize --rest fp16``).

``EngineConfig.simulate`` builds the contract simulator's engine instead (``trt_sim``):
the same sidecar and profiles, ONNX Runtime's math, no GPU. A timing cache file speeds up
real rebuilds; a plan is reused only when its sidecar matches what would be built.

tensorrt and CUDA are imported on first use only, so every other command works on a
machine without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sasq.engines.trt_device import (  # noqa: F401  (GPU_MISSING, TRT_MISSING: re-exported)
    GPU_MISSING,
    TRT_MISSING,
    GpuUnavailableError,
    gpu_name,
    require_tensorrt,
)
from sasq.engines.trt_plan import (
    BatchRange,
    EngineEntry,
    PlanInfo,
    engine_file,
    load_plan_info,
    profile_shapes,
    sidecar_path,
    step_graphs,
)
from sasq.errors import UserError
from sasq.exporter.manifest import Manifest, verify
from sasq.files import atomic_path, write_text

SIM_GPU = "none (simulated)"


@dataclass(frozen=True)
class EngineConfig:
    batch: BatchRange = field(default_factory=BatchRange)
    builder_optimization_level: int = 3
    workspace_mb: int = 4096
    timing_cache: Path | None = None
    simulate: bool = False  # the contract simulator's engine: ORT math, TensorRT's I/O rules
    trt_version: str = "10"  # whose ONNX parser table a simulated build checks the graph on

    def settings(self) -> dict:
        """What decides the engine's content (where the timing cache lives does not)."""
        out = {"builder_optimization_level": self.builder_optimization_level,
               "workspace_mb": self.workspace_mb}  # fmt: skip
        return out | ({"parser_table": self.trt_version} if self.simulate else {})


def sim_runtime() -> tuple[str, str]:
    import onnxruntime as ort

    return f"simulator (onnxruntime {ort.__version__})", SIM_GPU


def runtime_identity(simulated: bool) -> tuple[str, str]:
    """(TensorRT version, GPU name) of this machine, as a sidecar records them."""
    if simulated:
        return sim_runtime()
    trt = require_tensorrt()
    return trt.__version__, gpu_name()


def _plan_for(manifest: Manifest, plan: Path, cfg: EngineConfig) -> PlanInfo:
    tensorrt, gpu = runtime_identity(cfg.simulate)
    engines = {}
    for key, scales in step_graphs(manifest).items():
        spec = manifest.graphs[key]
        engines[key] = EngineEntry(
            engine_file(plan, key).name, spec.file, manifest.files[spec.file].sha256, scales
        )
    return PlanInfo(tensorrt, gpu, cfg.batch, cfg.settings(), engines, cfg.simulate)


def _reusable(plan: Path, want: PlanInfo, rebuild: bool) -> bool:
    """True when the plan on disk is exactly what would be built; a plan made for another
    model, TensorRT, GPU or batch range is refused unless ``rebuild``."""
    if rebuild or not plan.exists():
        return False
    old = load_plan_info(plan)
    if old != want:
        a, b = old.to_dict(), want.to_dict()
        what = [k for k in b if a.get(k) != b[k]]
        raise UserError(
            f"{plan}: stale or foreign engine (different {', '.join(what)}); use --rebuild"
        )
    return all(engine_file(plan, k).exists() for k in want.engines)


def build_engine(
    onnx_dir: str | Path, plan: str | Path, cfg: EngineConfig, rebuild: bool = False
) -> Path:
    """Build (or reuse) the step engines of an export folder; returns the plan path."""
    onnx_dir, plan = Path(onnx_dir), Path(plan)
    manifest = verify(onnx_dir)
    if not manifest.dynamic_batch and (cfg.batch.min, cfg.batch.max) != (manifest.batch_size,) * 2:
        raise UserError(
            f"{onnx_dir}: exported for batch {manifest.batch_size} only; "
            f"use `batch_range` {manifest.batch_size}:{manifest.batch_size}",
            param="batch_range",
        )
    want = _plan_for(manifest, plan, cfg)
    if _reusable(plan, want, rebuild):
        return plan
    plan.parent.mkdir(parents=True, exist_ok=True)
    for key, entry in want.engines.items():
        profiles = [profile_shapes(manifest, cfg.batch, si) for si in entry.scales]
        onnx_path = onnx_dir / entry.onnx
        with atomic_path(engine_file(plan, key)) as tmp:
            if cfg.simulate:
                _build_simulated(onnx_path, entry.onnx, profiles, tmp, cfg)
            else:
                _build_tensorrt(onnx_path, profiles, tmp, cfg)
    import json

    write_text(sidecar_path(plan), json.dumps(want.to_dict(), indent=2) + "\n")
    return plan


def _build_simulated(onnx_path: Path, onnx_file: str, profiles, tmp: Path, cfg: EngineConfig):
    """What a TensorRT build would refuse is refused here too: ops or types outside the
    ONNX parser's support (the lint's tables), then the engine file."""
    from sasq.engines.lint import LintConfig, Rule, lint
    from sasq.engines.trt_sim import write_sim_engine

    parse_rules = {Rule.UNSUPPORTED_OP, Rule.UNSUPPORTED_DTYPE, Rule.OPSET}
    cfg_lint = LintConfig(trt_version=cfg.trt_version)
    bad = [v for v in lint(onnx_path, cfg_lint) if v.rule in parse_rules]
    if bad:
        raise UserError(f"{onnx_path}: TensorRT's ONNX parser would refuse it: {bad[0]}")
    write_sim_engine(tmp, onnx_file, profiles)


def _build_tensorrt(onnx_path: Path, profiles, tmp: Path, cfg: EngineConfig) -> None:
    trt = require_tensorrt()
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        NetworkFromOnnxPath,
        Profile,
        SaveEngine,
    )

    trt_profiles = []
    for shapes in profiles:
        p = Profile()
        for name, (lo, opt, hi) in shapes.items():
            p.add(name, min=lo, opt=opt, max=hi)
        trt_profiles.append(p)
    timing = str(cfg.timing_cache) if cfg.timing_cache else None
    config = CreateConfig(
        profiles=trt_profiles,
        builder_optimization_level=cfg.builder_optimization_level,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: cfg.workspace_mb << 20},
        load_timing_cache=timing,
    )
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    engine = EngineFromNetwork(network, config=config, save_timing_cache=timing)
    SaveEngine(engine, path=str(tmp))()
