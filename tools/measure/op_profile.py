"""``sasq profile``: where a step graph's time goes, from ONNX Runtime's own profiler.

Warm-up generations, then ``repeats`` profiled generations of an export folder (FP or Q/DQ)
under the bench's session settings and its rules (``steadiness``): every number is the median
over the repeats, the step wall times and the generation's total carry min / max / spread,
and a high load average or spread is flagged.

Every kernel event of the step session is attributed to its scale (by the ``model_run`` it
falls in) and summed per kernel type (the op ORT actually ran, after its fusions:
``MatMulIntegerToFloat`` means an int8 GEMM ran) and per role: the attention-value product
(every node the shift-and-sum passes made for an AV MatMul is named after it), QK^T, Q/DQ,
the linears, and the glue between them by kind (norm, activation, elementwise, layout;
``GLUE_ROLES``), with "other" for any op not listed. Kernel times exclude the executor's
overhead between nodes, so they sum to a little less than the step's wall time.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import onnx
import torch

from sasq import progress
from sasq.errors import UserError
from sasq.exporter.manifest import Manifest, load_manifest
from sasq.tools.measure.config import ProfileConfig
from sasq.tools.measure.steadiness import load_warning, loadavg, spread_warning, summary
from sasq.tools.report import json_md


def attention_nodes(onnx_dir: Path, manifest: Manifest) -> tuple[list[str], list[str]]:
    """Names of the attention-value and QK^T MatMuls. The AV names of a shift-and-sum
    export are those the quantizer recorded (their nodes were replaced)."""
    from sasq.quant.targets import OpKind, quantizable_inputs

    step = onnx.load(str(onnx_dir / manifest.graphs["step"].file), load_external_data=False)
    targets = quantizable_inputs(step)
    av = manifest.extra.get("quant", {}).get("shift_sum_extra_keys")
    if not av:
        av = [t.node for t in targets if t.kind == OpKind.ATTN_AV]
    return list(av), [t.node for t in targets if t.kind == OpKind.ATTN_QK]


# What is neither a GEMM nor Q/DQ, by kind: on VAR-d16 int8 this glue is about a third of
# the step (the linears run near their limit), so a profile says which kind to fold next.
GLUE_ROLES: dict[str, tuple[str, ...]] = {
    "norm": ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
             "SkipSimplifiedLayerNormalization", "ReduceL2", "ReduceMean", "LpNormalization"),
    "activation": ("FastGelu", "Gelu", "BiasGelu", "QuickGelu", "Softmax", "Sigmoid", "Tanh",
                   "Relu"),
    "elementwise": ("Add", "Mul", "Sub", "Div", "Sum", "Clip", "Pow", "Sqrt", "Where", "Min",
                    "Max", "Neg", "Exp"),
    "layout": ("Transpose", "Reshape", "Split", "Slice", "Squeeze", "Unsqueeze", "Concat",
               "Gather", "Expand", "Shape", "Identity", "Flatten", "Cast"),
}  # fmt: skip
_GLUE = {op: role for role, ops in GLUE_ROLES.items() for op in ops}


def _role(node: str, op: str, av: list[str], qk: list[str]) -> str:
    def owned(names: list[str]) -> bool:
        return any(node == n or node.startswith(n + "_") for n in names)

    if owned(av):
        return "attn-value"  # incl. its Q/DQ and every shift-and-sum node
    if owned(qk):
        return "attn-qk"
    if op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
        return "q/dq"
    if op in ("MatMul", "MatMulIntegerToFloat", "Gemm", "FusedMatMul", "MatMulInteger"):
        return "linear"
    return _GLUE.get(op, "other")


def _one_generation(events: list[dict], runs: list[dict], av: list[str], qk: list[str]):
    """Kernel ms per op type, and per role and scale, of the step runs ``runs``."""
    SN = len(runs)
    by_op: dict[str, float] = defaultdict(float)
    by_role: dict[str, list[float]] = defaultdict(lambda: [0.0] * SN)
    t0, t1 = runs[0]["ts"], runs[-1]["ts"] + runs[-1]["dur"]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not t0 <= e["ts"] <= t1:
            continue
        si = next((i for i, r in enumerate(runs) if r["ts"] <= e["ts"] <= r["ts"] + r["dur"]), None)
        if si is None:
            continue
        node, op = e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?")
        by_op[op] += e["dur"] / 1e3
        by_role[_role(node, op, av, qk)][si] += e["dur"] / 1e3
    return by_op, by_role


def summarize(
    events: list[dict], steps_per_gen: int, av: list[str], qk: list[str], repeats: int = 1
) -> dict:
    """Kernel time (ms) per op type and role, per scale: the median over the last
    ``repeats`` generations in ``events`` (an ORT profile of the step session); step wall
    times and the generation's total with min / max / spread over them."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    need = steps_per_gen * repeats
    if len(runs) < need:
        raise UserError(f"profile has {len(runs)} step runs, expected {need}")
    runs = runs[-need:]  # the profiled generations; earlier ones warmed up
    gens = [runs[g * steps_per_gen : (g + 1) * steps_per_gen] for g in range(repeats)]
    parts = [_one_generation(events, g, av, qk) for g in gens]
    ops = sorted({op for by_op, _ in parts for op in by_op})
    roles = sorted({role for _, by_role in parts for role in by_role})
    by_op = {op: median(p[0].get(op, 0.0) for p in parts) for op in ops}
    by_role = {
        role: [
            round(median(p[1][role][si] if role in p[1] else 0.0 for p in parts), 3)
            for si in range(steps_per_gen)
        ]
        for role in roles
    }
    walls = [[r["dur"] / 1e3 for r in g] for g in gens]  # [repeat][scale]
    per_scale = [summary([w[si] for w in walls]) for si in range(steps_per_gen)]
    total = summary([sum(w) for w in walls])
    return {
        "step_wall_ms": [round(s["median"], 3) for s in per_scale],
        "step_wall_ms_min": [round(s["min"], 3) for s in per_scale],
        "step_wall_ms_max": [round(s["max"], 3) for s in per_scale],
        "generation_ms": {k: round(v, 3) for k, v in total.items()},
        "kernel_ms": round(sum(sum(v) for v in by_role.values()), 3),
        "by_op_ms": {k: round(v, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "by_role_ms": by_role,
    }


def median(values) -> float:
    return statistics.median(list(values))


def profile_export(onnx_dir: str | Path, cfg: ProfileConfig) -> dict:
    """Profile one generation of ``onnx_dir``'s step graph after a warm-up generation."""
    from sasq.engines.decode import generate
    from sasq.engines.ort_backend import OrtBackend
    from sasq.engines.ort_session import SessionConfig
    from sasq.models.config import ModelConfig

    onnx_dir = Path(onnx_dir)
    manifest = load_manifest(onnx_dir)  # OrtBackend verifies the files
    mc = ModelConfig.from_dict(manifest.model_config)
    SN = len(manifest.patch_nums)
    labels = torch.arange(cfg.batch) % mc.var.num_classes
    with tempfile.TemporaryDirectory() as tmp:
        sc = SessionConfig.for_int8(  # as the bench runs int8
            intra_op_threads=cfg.threads,
            enable_profiling=True,
            profile_prefix=str(Path(tmp) / "sasq"),
        )
        backend = OrtBackend(onnx_dir, sc)
        load_before = loadavg()
        n = cfg.warmup + cfg.repeats
        for _ in progress.bar(range(n), f"profile ({cfg.warmup} warm-up)"):
            generate(
                backend, labels, manifest.patch_nums, mc.sampling, cfg.seed, mc.var.num_classes
            )
        events = json.loads(Path(backend.step_session.end_profiling()).read_text())
    result = summarize(events, SN, *attention_nodes(onnx_dir, manifest), repeats=cfg.repeats)
    load_after = loadavg()
    warnings = load_warning(load_before)
    warnings += spread_warning("generation (sum of step wall times)", result["generation_ms"])
    return {
        "onnx": str(onnx_dir),
        "config": vars(cfg),
        "patch_nums": manifest.patch_nums,
        "loadavg_1min": {"before": load_before, "after": load_after},
        **result,
        "roofline": _roofline(onnx_dir, manifest, result["step_wall_ms"], cfg),
        "warnings": warnings,
    }


def _roofline(onnx_dir: Path, manifest: Manifest, step_ms: list[float], cfg: ProfileConfig):
    """The step wall times against the machine's limit at the export's precision (no
    end-to-end time: a profile runs the step graph alone)."""
    if not cfg.roofline:
        return None
    from sasq.tools.measure import roofline as rl

    arch, precision = rl.Arch.of(manifest), rl.export_precision(onnx_dir)
    rates = rl.measure_rates(arch, [cfg.batch], [precision], cfg.threads)
    joined = rl.join(rl.image_limit(arch, cfg.batch, precision, rates), step_ms, None, precision)
    return {**joined, "rates": rl.rates_record(rates)}


def to_markdown(r: dict) -> str:
    c, load = r["config"], r.get("loadavg_1min") or {}
    lines = [
        f"# sasq profile: {r['onnx']} (batch {c['batch']}, threads {c['threads']})",
        "",
        f"Median of {c.get('repeats', 1)} profiled generations after {c.get('warmup', 1)} "
        f"warm-up; 1-min load average {_load(load.get('before'))} before, "
        f"{_load(load.get('after'))} after.",
        "",
    ]
    if r.get("warnings"):
        lines += ["**Warnings** (these times are doubtful):", ""]
        lines += [f"- {w}" for w in r["warnings"]] + [""]
    lines += [
        "| role | " + " | ".join(f"s{i} ms" for i in range(len(r["patch_nums"]))) + " | total ms |",
        "|---|" + "---|" * (len(r["patch_nums"]) + 1),
    ]
    for role, ms in r["by_role_ms"].items():
        lines.append(f"| {role} | " + " | ".join(f"{x:.2f}" for x in ms) + f" | {sum(ms):.2f} |")
    wall = r["step_wall_ms"]
    lines.append("| step wall | " + " | ".join(f"{x:.2f}" for x in wall) + f" | {sum(wall):.2f} |")
    if "step_wall_ms_min" in r:
        g = r["generation_ms"]
        for key, name, tot in (("min", "wall min", g["min"]), ("max", "wall max", g["max"])):
            vals = r[f"step_wall_ms_{key}"]
            lines.append(f"| {name} | " + " | ".join(f"{x:.2f}" for x in vals) + f" | {tot:.2f} |")
        lines += ["", f"Generation: median {g['median']:.2f} ms, spread {100 * g['spread']:.0f}%."]
    lines += ["", "| kernel (op ORT ran) | ms | share |", "|---|---|---|"]
    for op, ms in r["by_op_ms"].items():
        lines.append(f"| {op} | {ms:.2f} | {100 * ms / r['kernel_ms']:.1f}% |")
    if r.get("roofline"):
        from sasq.tools.measure.roofline import markdown, rates_note

        lines += ["", "## Against the machine's limit (step wall times)", ""]
        lines += markdown({"step": r["roofline"]}) + ["", rates_note(r["roofline"]["rates"])]
    return "\n".join(lines) + "\n"


def _load(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def write_report(r: dict, out_dir: Path) -> tuple[Path, Path]:
    return json_md.write_report(r, out_dir, "profile", to_markdown)
