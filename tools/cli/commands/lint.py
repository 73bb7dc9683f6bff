"""sasq lint: a Q/DQ ONNX checked against TensorRT's (or ORT's) explicit-quantization rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from sasq.errors import UserError
from sasq.tools.cli import checks
from sasq.tools.cli import types as T

NAME = "lint"
HELP = "check a Q/DQ ONNX against TensorRT's explicit-quantization rules (exit 1 if any)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.engines.config import LintConfig
    from sasq.tools.cli.fields import option

    p.add_argument("model_onnx", metavar="MODEL.onnx", help="a Q/DQ ONNX model")
    option(
        p,
        "--trt-version",
        LintConfig,
        "trt_version",
        help="TensorRT major version whose ONNX parser table (ops and per-op dtypes, "
        "engines/trt_support/) the tensorrt target is checked against",
    )
    p.add_argument(
        "--target",
        default=None,
        choices=["tensorrt", "ort"],
        help="whose rules (default: the target recorded by 'sasq quantize' beside the model, "
        "else tensorrt)",
    )
    option(
        p,
        "--min-opset",
        LintConfig,
        "min_opset",
        type=T.int_in(1, 99),
        help="lowest opset accepted",
    )
    p.add_argument(
        "--touched-only",
        action="store_true",
        help="check only MatMuls that already have a DequantizeLinear input",
    )
    p.add_argument(
        "--float-node",
        action="append",
        default=[],
        metavar="GLOB",
        help="MatMul/Gemm node names allowed to stay float (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from sasq.engines.lint import Coverage, Target, config_for_export, format_violations, lint

    path = Path(args.model_onnx)
    if not path.is_file():
        raise UserError(f"no such ONNX file: {path}")
    quant = checks.quant_of_export(path)
    cfg = config_for_export(
        quant,
        float_nodes=tuple(args.float_node) + tuple(quant.get("kept_float", {})),
        min_opset=args.min_opset,
        coverage=Coverage.TOUCHED if args.touched_only else Coverage.ALL,
        target=Target(args.target or quant.get("target", "tensorrt")),
        trt_version=args.trt_version,
    )
    try:
        violations = lint(path, cfg)
    except UserError:
        raise
    except Exception as e:  # onnx raises DecodeError and friends for a file that is not ONNX
        raise UserError(f"{path}: cannot be read as ONNX ({type(e).__name__})") from None
    if cfg.target == Target.TENSORRT:
        t = cfg.support
        print(f"ops and dtypes checked against {t.label()}'s ONNX parser table ({t.source_url})")
    print(format_violations(violations, cfg.target))
    return 1 if violations else 0
