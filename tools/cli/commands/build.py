"""sasq build: TensorRT engines of an export's step graphs (a profile per scale)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sasq import progress
from sasq.tools.cli import checks
from sasq.tools.cli import types as T

NAME = "build"
HELP = "build a TensorRT engine of an export's step graph (one profile per scale)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.engines.trt_engine import EngineConfig
    from sasq.engines.trt_plan import BatchRange
    from sasq.tools.cli.fields import option

    d = BatchRange()

    p.add_argument("--onnx", required=True, metavar="DIR", help="export folder (FP or Q/DQ)")
    p.add_argument("--out", required=True, help="engine plan file to write")
    p.add_argument(
        "--batch-range",
        default=f"{d.min}:{d.max}",
        metavar="MIN:MAX",
        help="images per batch the engine serves (the step runs 2x rows for CFG); MIN:OPT:MAX "
        f"also sets the batch TensorRT tunes for (default: {d.min}:{d.max}, opt {d.opt} "
        "clipped into the range)",
    )
    option(
        p,
        "--simulate",
        EngineConfig,
        "simulate",
        help="build the contract simulator's engine (ONNX Runtime math under TensorRT's I/O "
        "rules: profiles, non-null addresses, no aliasing), no GPU needed",
    )
    option(
        p,
        "--trt-version",
        EngineConfig,
        "trt_version",
        choices=["10", "11"],
        help="with --simulate: whose ONNX parser table (ops and types) the graph must pass",
    )
    option(
        p,
        "--opt-level",
        EngineConfig,
        "builder_optimization_level",
        type=T.int_in(0, 5),
        help="builder optimization 0-5",
    )
    p.add_argument("--timing-cache", default=None, help="timing cache file (read and written)")
    p.add_argument("--rebuild", action="store_true", help="replace a stale or foreign engine")


def run(args: argparse.Namespace) -> int:
    from sasq.engines.trt_engine import EngineConfig, build_engine
    from sasq.engines.trt_plan import BatchRange

    out = checks.out_file(args.out)
    cfg = EngineConfig(
        batch=BatchRange.parse(args.batch_range),
        simulate=args.simulate,
        trt_version=args.trt_version,
        builder_optimization_level=args.opt_level,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
    )
    plan = build_engine(args.onnx, out, cfg, rebuild=args.rebuild)
    print(json.dumps({"engine": str(plan), "bytes": plan.stat().st_size}))
    progress.wrote("build", plan)
    return 0
