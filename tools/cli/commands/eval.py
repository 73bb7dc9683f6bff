"""sasq eval: the paper-style quality table, every quantizer x bit width against FP."""

from __future__ import annotations

import argparse

from sasq import progress
from sasq.errors import UserError
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "eval"
HELP = "the paper-style quality table: quantizers x bit widths vs FP (IS, FID, FID2FP, ...)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.exporter.qdq_config import BIT_WIDTHS
    from sasq.tools.quality.config import ROWS, EvalConfig

    d = EvalConfig()
    groups.model(p)
    p.add_argument(
        "--per-class",
        type=T.samples,
        default=d.per_class,
        help=f"samples per class (default {d.per_class}: {10 * d.per_class:,} images on a "
        "10-class model such as the embedded ones)",
    )
    p.add_argument(
        "--bits",
        default=",".join(d.bits),
        help=f"comma-separated bit widths, any of {', '.join(BIT_WIDTHS)}",
    )
    p.add_argument("--rows", default=",".join(d.rows), help=f"any of {', '.join(ROWS)}")
    p.add_argument(
        "--bootstrap",
        type=T.int_in(100, 100_000),
        default=d.bootstrap,
        help="half-samples drawn for every 95%% interval (tools/quality/intervals.py)",
    )
    p.add_argument("--calib-n", type=T.samples, default=d.calib_samples, help="calibration images")
    groups.seed(p, d.seed)
    groups.out_folder(p, "out/eval", "eval.json and eval.md")


def run(args: argparse.Namespace) -> int:
    from sasq.exporter.qdq_config import BIT_WIDTHS
    from sasq.tools.quality.config import ROWS, EvalConfig
    from sasq.tools.quality.evaluate import evaluate, to_markdown, write_report
    from sasq.tools.quality.scores import default_classifier

    model = groups.load_model(args)
    groups.embedded_or_refuse(model, "eval")
    ec = EvalConfig(
        bootstrap=args.bootstrap,
        per_class=args.per_class,
        bits=tuple(args.bits.split(",")),
        rows=tuple(args.rows.split(",")),
        calib_samples=args.calib_n,
        seed=args.seed,
    )
    unknown = [b for b in ec.bits if b not in BIT_WIDTHS]
    if unknown:
        raise UserError(f"unknown bit widths {unknown}; choose from {', '.join(BIT_WIDTHS)}")
    if unknown := [r for r in ec.rows if r not in ROWS]:  # an unknown row ran as 'plain'
        raise UserError(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    result = evaluate(model, default_classifier(), ec)
    paths = write_report(result, checks.out_folder(args.out))
    print(to_markdown(result))
    progress.wrote("eval", *paths)
    return 0
