"""sasq profile: where a step graph's time goes, per scale, kernel and role."""

from __future__ import annotations

import argparse

from sasq import progress
from sasq.errors import UserError
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "profile"
HELP = "where a step graph's time goes: ORT per-op profile by scale, kernel and role"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.tools.cli.fields import option
    from sasq.tools.measure.config import ProfileConfig

    groups.onnx(p, required=True, help="export folder to profile")
    groups.timing_threads(p, "ONNX Runtime intra-op")
    option(p, "--batch", ProfileConfig, "batch", type=T.count, help="images (2x rows with CFG)")
    option(p, "--seed", ProfileConfig, "seed", type=T.seed, help="sampling seed")
    option(
        p,
        "--repeats",
        ProfileConfig,
        "repeats",
        type=T.count,
        help="profiled generations; every time is their median, with min/max/spread (default: 5)",
    )
    option(
        p,
        "--warmup",
        ProfileConfig,
        "warmup",
        type=T.int_in(0, 100),
        help="generations run before them, not counted (default: 1)",
    )
    option(
        p,
        "--roofline",
        ProfileConfig,
        "roofline",
        help="also each scale against the machine's limit at the export's precision (int8 "
        "if quantized, else fp32): its GEMMs as plain MatMuls, its weights at the memory "
        "bandwidth",
    )
    groups.out_folder(p, "out/profile", "profile.json and .md")


def run(args: argparse.Namespace) -> int:
    from sasq.tools.measure.config import ProfileConfig
    from sasq.tools.measure.op_profile import profile_export, to_markdown, write_report

    if args.batch < 1 or args.threads < 0:
        raise UserError("--batch must be at least 1 and --threads at least 0 (0: all cores)")
    checks.require_generation_fits(args.onnx, args.batch, "--batch")
    pc = ProfileConfig(
        args.batch, args.threads, args.seed, args.repeats, args.warmup, args.roofline
    )
    report = profile_export(args.onnx, pc)
    paths = write_report(report, checks.out_folder(args.out))
    print(to_markdown(report))
    progress.wrote("profile", *paths)
    return 0
