"""Weight-only 4/8-bit (ONNX Runtime's MatMulNBits) against sasq's int8 linears, at
VAR-d16's linear shapes for every scale (batch 1 + CFG unless --batch), on this CPU.

    python scripts/nbits_vs_int8.py OUT_DIR [--batch B] [--threads T] [--depth D]

Each linear of a block (qkv, proj, fc1, fc2) and the head is one one-node graph per scale,
timed by ONNX Runtime's profiler as the roofline's limits are (``matmul_peak``: kernel time
only, the least of up to 10 runs): sasq's int8 form (static per-tensor activation Q/DQ,
per-channel int8 weights, bounded to 7 bits: MatMulIntegerToFloat), against MatMulNBits
with 8- and 4-bit blocks of 32 computing in int8 (accuracy level 4) and 4-bit computing in
fp32 (level 0). A scale's time is a block's linears times the depth plus the head. The
error column is the largest deviation from fp32 over the output, relative to its largest
magnitude, on random inputs: a rounding check, not a quality claim (that is ``sasq eval``).

Writes ``OUT_DIR/nbits.json`` and ``nbits.md`` with this CPU's int8 features.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import onnxruntime as ort

from sasq.engines.int8_kernels import cpu_int8
from sasq.models.config import VQVAEConfig, official_var
from sasq.tools.measure.matmul_peak import (
    GemmShape,
    _feeds,
    _graph,
    linear_shapes,
    max_rel_error,
    model_kernel_ms,
    nbits_graph,
)
from sasq.tools.report.json_md import write_report

# name -> (bits, accuracy level); None is sasq's int8 form
FORMS = {"int8": None, "w8 int8-compute": (8, 4), "w4 int8-compute": (4, 4), "w4 fp32": (4, 0)}


def _model(s: GemmShape, form: str):
    spec = FORMS[form]
    return _graph(s, True) if spec is None else nbits_graph(s, *spec)


def measure(batch: int, threads: int, depth: int) -> dict:
    var = official_var(depth)
    C, V = var.embed_dim, VQVAEConfig().vocab_size  # the official tokenizer's codebook
    scales = []
    for si, pn in enumerate(var.patch_nums):
        rows = 2 * batch * pn * pn
        shapes = [(s, depth) for s in linear_shapes(rows, C)] + [(GemmShape("head", rows, C, V), 1)]
        per_form = {}
        for form in FORMS:
            ms = {
                s.name: model_kernel_ms(_model(s, form), _feeds(s, False), threads)
                for s, _ in shapes
            }
            per_form[form] = {"ms": sum(ms[s.name] * n for s, n in shapes), "by_linear": ms}
        best = min(per_form, key=lambda f: per_form[f]["ms"])
        scales.append({"si": si, "pn": pn, "rows": rows, "forms": per_form, "fastest": best})
        print(f"scale {si}: " + ", ".join(f"{f} {v['ms']:.2f} ms" for f, v in per_form.items()))
    probe = GemmShape("fc1", 2 * batch, C, 4 * C)
    errors = {f: max_rel_error(_model(probe, f), probe, threads) for f in FORMS}
    return {
        "model": f"VAR-d{depth} linears (C={C}, head V={V})",
        "batch": batch,
        "threads": threads,
        "cpu": {**cpu_int8().as_dict(), "processor": platform.processor() or platform.machine()},
        "onnxruntime": ort.__version__,
        "scales": scales,
        "max_rel_error_fc1": errors,
    }


def to_markdown(r: dict) -> str:
    forms = list(FORMS)
    cpu = r["cpu"]
    lines = [
        f"# Weight-only MatMulNBits vs sasq int8: {r['model']}, batch {r['batch']} + CFG",
        "",
        f"ONNX Runtime {r['onnxruntime']}, {r['threads']} threads; CPU int8 features: "
        f"{' '.join(cpu['int8_flags'] or ['unknown'])} (u8 x s8 kernel {cpu['u8s8_kernel']}). "
        "Kernel ms per scale (all blocks' linears and the head), least of up to 10 runs.",
        "",
        "| scale | rows | "
        + " | ".join(f"{f} ms" for f in forms)
        + " | fastest | best NBits / int8 |",
        "|---|---|" + "---|" * len(forms) + "---|---|",
    ]
    for s in r["scales"]:
        ms = {f: s["forms"][f]["ms"] for f in forms}
        nb = min(v for f, v in ms.items() if f != "int8")
        lines.append(
            f"| {s['si']} | {s['rows']} | "
            + " | ".join(f"{ms[f]:.2f}" for f in forms)
            + f" | {s['fastest']} | {nb / ms['int8']:.2f}x |"
        )
    total = {f: sum(s["forms"][f]["ms"] for s in r["scales"]) for f in forms}
    lines.append("| all | | " + " | ".join(f"{total[f]:.1f}" for f in forms) + " | | |")
    lines += [
        "",
        "Largest deviation from fp32 (fc1 at the first scale's rows, relative to the largest "
        "output): " + ", ".join(f"{f} {e:.1e}" for f, e in r["max_rel_error_fc1"].items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=16)
    args = ap.parse_args(argv)
    result = measure(args.batch, args.threads, args.depth)
    write_report(result, args.out, "nbits", to_markdown)
    print(to_markdown(result))


if __name__ == "__main__":
    main()
