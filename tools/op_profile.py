"""``sasq profile``: where a step graph's time goes, from ONNX Runtime's own profiler.

One warm-up generation, then one profiled generation of an export folder (FP or Q/DQ) under
the bench's session settings. Every kernel event of the step session is attributed to its
scale (by the ``model_run`` it falls in) and summed per kernel type (the op ORT actually ran,
after its fusions: ``MatMulIntegerToFloat`` means an int8 GEMM ran) and per role: the
attention-value product (every node the shift-and-sum passes made for an AV MatMul is named
after it), QK^T, Q/DQ, and the rest. Kernel times exclude the executor's overhead between
nodes, so they sum to a little less than the step's wall time.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from sasq.exporter.manifest import Manifest, load_manifest
from sasq.tools import atomic
from sasq.tools.errors import UserError


@dataclass(frozen=True)
class ProfileConfig:
    batch: int = 1  # images (2x rows with CFG)
    threads: int = 2
    seed: int = 0


def attention_nodes(onnx_dir: Path, manifest: Manifest) -> tuple[list[str], list[str]]:
    """Names of the attention-value and QK^T MatMuls. The AV names of a shift-and-sum
    export are those the quantizer recorded (their nodes were replaced)."""
    from sasq.calib.recorder import OpKind, quantizable_inputs

    step = onnx.load(str(onnx_dir / manifest.graphs["step"].file), load_external_data=False)
    targets = quantizable_inputs(step)
    av = manifest.extra.get("quant", {}).get("shift_sum_extra_keys")
    if not av:
        av = [t.node for t in targets if t.kind == OpKind.ATTN_AV]
    return list(av), [t.node for t in targets if t.kind == OpKind.ATTN_QK]


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
    return "other"


def summarize(events: list[dict], steps_per_gen: int, av: list[str], qk: list[str]) -> dict:
    """Kernel time (ms) per op type and role, per scale, of the last generation in
    ``events`` (an ORT profile of the step session)."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    if len(runs) < steps_per_gen:
        raise UserError(f"profile has {len(runs)} step runs, expected {steps_per_gen}")
    runs = runs[-steps_per_gen:]  # the profiled generation; earlier ones warmed up
    by_op: dict[str, float] = defaultdict(float)
    by_role: dict[str, list[float]] = defaultdict(lambda: [0.0] * steps_per_gen)
    wall = [r["dur"] / 1e3 for r in runs]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        si = next((i for i, r in enumerate(runs) if r["ts"] <= e["ts"] <= r["ts"] + r["dur"]), None)
        if si is None:
            continue
        node, op = e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?")
        by_op[op] += e["dur"] / 1e3
        by_role[_role(node, op, av, qk)][si] += e["dur"] / 1e3
    kernel = sum(by_op.values())
    return {
        "step_wall_ms": [round(w, 3) for w in wall],
        "kernel_ms": round(kernel, 3),
        "by_op_ms": {k: round(v, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "by_role_ms": {k: [round(x, 3) for x in v] for k, v in sorted(by_role.items())},
    }


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
        sc = SessionConfig(
            intra_op_threads=cfg.threads,
            disabled_optimizers=("MatMulAddFusion",),  # as the bench runs int8
            enable_profiling=True,
            profile_prefix=str(Path(tmp) / "sasq"),
        )
        backend = OrtBackend(onnx_dir, sc)
        for _ in range(2):
            generate(
                backend, labels, manifest.patch_nums, mc.sampling, cfg.seed, mc.var.num_classes
            )
        events = json.loads(Path(backend.step_session.end_profiling()).read_text())
    result = summarize(events, SN, *attention_nodes(onnx_dir, manifest))
    return {"onnx": str(onnx_dir), "config": vars(cfg), "patch_nums": manifest.patch_nums, **result}


def to_markdown(r: dict) -> str:
    lines = [
        f"# sasq profile: {r['onnx']} (batch {r['config']['batch']}, "
        f"threads {r['config']['threads']})",
        "",
        "| role | " + " | ".join(f"s{i} ms" for i in range(len(r["patch_nums"]))) + " | total ms |",
        "|---|" + "---|" * (len(r["patch_nums"]) + 1),
    ]
    for role, ms in r["by_role_ms"].items():
        lines.append(f"| {role} | " + " | ".join(f"{x:.2f}" for x in ms) + f" | {sum(ms):.2f} |")
    wall = r["step_wall_ms"]
    lines.append("| step wall | " + " | ".join(f"{x:.2f}" for x in wall) + f" | {sum(wall):.2f} |")
    lines += ["", "| kernel (op ORT ran) | ms | share |", "|---|---|---|"]
    for op, ms in r["by_op_ms"].items():
        lines.append(f"| {op} | {ms:.2f} | {100 * ms / r['kernel_ms']:.1f}% |")
    return "\n".join(lines) + "\n"


def write_report(r: dict, out_dir: Path) -> tuple[Path, Path]:
    return atomic.write_report(r, out_dir, "profile", to_markdown)
