"""sasq quantize: an FP export and its calibration cache -> the Q/DQ export of a target."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sasq import progress
from sasq.tools.cli import types as T

NAME = "quantize"
HELP = "FP export + calibration cache -> TensorRT-ready Q/DQ export (shift-and-sum option)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.exporter.qdq_config import BIT_WIDTHS, QuantConfig, ShiftSumConfig
    from sasq.tools.cli.fields import option

    p.add_argument("--onnx", required=True, metavar="DIR", help="FP export folder")
    p.add_argument("--calib", required=True, help="calibration cache of that export")
    p.add_argument("--out", required=True, help="folder for the quantized export")
    p.add_argument(
        "--bits",
        default=f"W{QuantConfig.w_bits}A{QuantConfig.a_bits}",
        choices=list(BIT_WIDTHS),
        help="W8A8 is real int8; W6A6, W4A8 and W4A6 are simulated with Clip",
    )
    p.add_argument(
        "--float-node",
        action="append",
        default=[],
        metavar="GLOB",
        help="MatMul node or weight names kept float, e.g. '*ffn.fc2*'",
    )
    p.add_argument(
        "--shift-sum",
        action="store_true",
        help="shift-and-sum quantization of the attention-value product",
    )
    option(
        p,
        "--shift-sum-mode",
        ShiftSumConfig,
        "mode",
        help="budget: tokens by attention under --budget; all2: every token n=2",
    )
    option(
        p,
        "--budget",
        ShiftSumConfig,
        "budget",
        type=T.fraction,
        help="extra AV work as a fraction of the step's MatMul work",
    )
    option(
        p,
        "--max-n",
        ShiftSumConfig,
        "max_n",
        type=int,
        choices=(1, 2, 4, 8),
        help="most copies of one key token",
    )
    p.add_argument(
        "--no-fuse",
        action="store_true",
        help="write the expanded branches instead of one fused AV MatMul",
    )
    p.add_argument(
        "--per-step",
        action="store_true",
        help="static per-step activation scales (PTQ4ARVG token-wise)",
    )
    option(
        p,
        "--target",
        QuantConfig,
        "target",
        help="runtime the graph is written for: ort (ONNX Runtime CPU kernels; shift-and-sum "
        "as two int8 products) or tensorrt (explicit quantization; shift-and-sum fused into "
        "one GEMM); both share the calibration and the int8 KV cache (default: ort)",
    )
    option(
        p,
        "--u8s8",
        QuantConfig,
        "u8s8",
        help="ort target: bounded writes 7-bit weights and queries and uint8 probabilities, "
        "so ONNX Runtime's u8 x s8 int8 kernels are exact on every x86 CPU (without VNNI "
        "they saturate on 8-bit operands); full keeps 8 bits everywhere, exact where the CPU "
        "has VNNI, run as slower s8 x s8 elsewhere (default: bounded)",
    )
    option(
        p,
        "--kv-cache",
        QuantConfig,
        "kv_cache",
        help="int8: K and V stored as int8 when appended, never float between steps; fp32: "
        "the float cache re-quantized at every step (the earlier graph) (default: int8)",
    )
    option(
        p,
        "--kv-bits",
        QuantConfig,
        "kv_bits",
        type=int,
        choices=range(2, 9),
        metavar="{2..8}",
        help="bits of the KV cache, below 8 simulated with Clip (default: the activations')",
    )
    option(
        p,
        "--precision",
        QuantConfig,
        "precision",
        help="int8, or fp8: E4M3 Q/DQ for Hopper/Ada TensorRT (scales amax/448, the KV cache "
        "stored as fp8; needs --target tensorrt and W8A8; ONNX Runtime runs it as reference)",
    )
    option(
        p,
        "--rest",
        QuantConfig,
        "rest",
        help="float type of everything not quantized: fp16 writes the casts into the graph "
        "(TensorRT 11's strongly typed int8 + fp16 engine; reductions stay fp32)",
    )
    option(
        p,
        "--cache-budget",
        ShiftSumConfig,
        "cache_budget",
        type=T.float_in(0.0, 1.0),
        help="shift-and-sum copies stored in the int8 cache: at most this fraction of its "
        "rows (default: 0.05)",
    )


def run(args: argparse.Namespace) -> int:
    from sasq.engines.lint import config_for_export, lint
    from sasq.exporter.manifest import verify
    from sasq.exporter.qdq_config import BIT_WIDTHS, QuantConfig, ShiftSumConfig
    from sasq.exporter.quantize import quantize
    from sasq.quant.cache import load_cache

    w, a = BIT_WIDTHS[args.bits]
    shift = ShiftSumConfig(
        enabled=args.shift_sum,
        mode=args.shift_sum_mode,
        budget=args.budget,
        max_n=args.max_n,
        fuse=not args.no_fuse,
        cache_budget=args.cache_budget,
    )
    cfg = QuantConfig(
        w_bits=w,
        a_bits=a,
        float_nodes=tuple(args.float_node),
        shift_sum=shift,
        static_per_step=args.per_step,
        target=args.target,
        kv_cache=args.kv_cache,
        kv_bits=args.kv_bits,
        precision=args.precision,
        rest=args.rest,
        u8s8=args.u8s8,
    )
    out = Path(args.out)  # quantize builds beside it and swaps it into place
    quantize(args.onnx, load_cache(args.calib), cfg, out)
    manifest = verify(out)
    quant = manifest.extra["quant"]
    violations = lint(out / manifest.graphs["step"].file, config_for_export(quant))
    for key, rec in quant.get("step_graphs", {}).items():  # step_long: its own float GEMMs
        kept = {**quant["kept_float"], **rec["kept_float"]}
        cfg_more = config_for_export({**quant, "kept_float": kept})
        violations += lint(out / manifest.graphs[key].file, cfg_more)
    forms = [f"{f['si']}:{f['form']}" for f in quant.get("attention_forms", [])]
    narrow = " (expected: narrower than int8 is simulated with Clip)" if w < 8 or a < 8 else ""
    print(
        json.dumps(
            {
                "out": str(out),
                "bits": args.bits,
                "quantized": len(quant["quantized"]),
                "kept_float": len(quant["kept_float"]),
                "shift_sum": args.shift_sum,
                "target": cfg.target.value,
                "precision": cfg.precision.value,
                "rest": cfg.rest.value,
                "u8s8": quant["u8s8"]["form"] if cfg.target.value == "ort" else None,
                "kv_cache": f"{cfg.kv_cache.value} ({cfg.cache_bits} bits)",
                "attention_forms": " ".join(forms) or None,
                "step_graphs": sorted({s.step_graph for s in manifest.scales}),
                "lint": "PASSED" if not violations else f"{len(violations)} violation(s){narrow}",
            },
            indent=2,
        )
    )
    progress.wrote("quantize", out)
    return 0
