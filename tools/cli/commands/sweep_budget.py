"""sasq sweep-budget: quality and extra time of shift-and-sum per budget, with intervals."""

from __future__ import annotations

import argparse

from sasq import progress
from sasq.errors import UserError
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "sweep-budget"
HELP = "shift-and-sum budget sweep: quality with 95 percent intervals and extra time per budget"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.exporter.qdq_config import BIT_WIDTHS
    from sasq.tools.quality.config import SweepConfig

    d = SweepConfig()
    groups.model(p, files=False)
    p.add_argument(
        "--budgets",
        type=T.fractions,
        default=d.budgets,
        help="shift-and-sum budgets, fractions in [0, 1] including 0 (default "
        + ",".join(f"{b:g}" for b in d.budgets)
        + ")",
    )
    p.add_argument(
        "--bits",
        default=",".join(d.bits),
        help=f"bit widths, any of {', '.join(BIT_WIDTHS)} (default {','.join(d.bits)})",
    )
    p.add_argument(
        "--kv-bits",
        default="A,4",
        help="cache widths to sweep: A (the activations' bits) or 2..8 (default A,4)",
    )
    p.add_argument(
        "--per-class",
        type=T.samples,
        default=d.per_class,
        help=f"samples per class (default {d.per_class})",
    )
    p.add_argument("--calib-n", type=T.samples, default=d.calib_samples, help="calibration images")
    p.add_argument(
        "--bootstrap",
        type=T.int_in(100, 100_000),
        default=d.bootstrap,
        help=f"half-samples drawn for the 95%% intervals (default {d.bootstrap})",
    )
    p.add_argument(
        "--bench-batch", type=T.count, default=d.bench_batch, help="batch of the timing run"
    )
    p.add_argument(
        "--repeats", type=T.int_in(1, 1000), default=d.bench_repeats, help="timing repeats"
    )
    groups.threads(p, d.threads, "ONNX Runtime threads")
    groups.seed(p, d.seed, f"sampling seed (default {d.seed})")
    groups.out_folder(p, "out/sweep", "sweep.json, .md and .png")


def _kv_bits(text: str) -> tuple[int | None, ...]:
    kv: list[int | None] = []
    for t in text.split(","):
        if t.strip() == "A":
            kv.append(None)
        elif t.strip().isdigit() and 2 <= int(t) <= 8:
            kv.append(int(t))
        else:
            raise UserError(f"--kv-bits: {t!r} is neither A nor a width in 2..8")
    return tuple(kv)


def run(args: argparse.Namespace) -> int:
    from sasq.tools.quality.budget_sweep import sweep_budget, write_report
    from sasq.tools.quality.config import SweepConfig
    from sasq.tools.quality.scores import default_classifier

    model = groups.load_model(args)
    groups.embedded_or_refuse(model, "sweep-budget")
    sc = SweepConfig(
        budgets=args.budgets,
        bits=tuple(args.bits.split(",")),
        kv_bits=_kv_bits(args.kv_bits),
        per_class=args.per_class,
        calib_samples=args.calib_n,
        seed=args.seed,
        bootstrap=args.bootstrap,
        bench_batch=args.bench_batch,
        bench_repeats=args.repeats,
        threads=args.threads,
    )
    out = checks.out_folder(args.out)
    paths = write_report(sweep_budget(model, default_classifier(), sc), out)
    progress.wrote("sweep-budget", *paths)
    return 0
