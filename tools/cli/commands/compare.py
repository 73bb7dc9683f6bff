"""sasq compare: two backends scale by scale on the same inputs; exit 1 if they differ."""

from __future__ import annotations

import argparse

from sasq import progress
from sasq.errors import UserError
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "compare"
HELP = "compare two backends scale by scale on the same inputs (exit 1 if off)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.tools.cli.fields import option
    from sasq.tools.quality.config import CompareConfig

    groups.model(p)
    p.add_argument("a", help="reference: torch | ort=DIR | ort-cuda=DIR | trt=DIR,PLAN")
    p.add_argument("b", help="the backend checked against it (same forms)")
    option(p, "--n", CompareConfig, "n", type=T.count, help="samples")
    option(p, "--seed", CompareConfig, "seed", type=T.seed, help="sampling seed")
    option(
        p,
        "--atol",
        CompareConfig,
        "atol",
        type=T.tolerance,
        help="absolute logit tolerance, FP against FP (a quantized side is judged by tokens "
        "and SQNR instead)",
    )
    option(p, "--rtol", CompareConfig, "rtol", type=T.tolerance, help="relative logit tolerance")
    groups.out_folder(p, "out/compare", "compare.json and .md")


def run(args: argparse.Namespace) -> int:
    from sasq.engines.backends import open_spec, parse_spec
    from sasq.exporter import verify
    from sasq.models import ModelConfig
    from sasq.tools.quality.compare import (
        compare_backends,
        describe_side,
        judge,
        to_markdown,
        write_report,
    )
    from sasq.tools.quality.config import CompareConfig

    for side in (args.a, args.b):  # a bare kind has no --onnx here to take its folder from
        if "=" not in side and side != "torch":
            raise UserError(
                f"backend {side!r}: expected torch, ort=DIR, ort-cuda=DIR or trt=DIR,PLAN"
            )
    checks.check_compare_sources(args)
    specs = [parse_spec(s) for s in (args.a, args.b)]
    sides = [describe_side(s) for s in specs]
    model = groups.load_model(args) if any(s.folder is None for s in specs) else None
    a, b = (open_spec(s, model) for s in specs)
    onnx = next((s.folder for s in specs if s.folder is not None), None)
    cfg = ModelConfig.from_dict(verify(onnx).model_config) if onnx else model.cfg
    cc = CompareConfig(n=args.n, seed=args.seed, atol=args.atol, rtol=args.rtol)
    report = compare_backends(cfg, a, b, cc)
    judge(report, sides, cfg, cc)
    paths = write_report(report, checks.out_folder(args.out))
    print(to_markdown(report))
    progress.wrote("compare", *paths)
    return 0 if report["passed"] else 1
