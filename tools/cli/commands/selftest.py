"""sasq selftest: the chain checked on the embedded model (CPU), or the GPU paths."""

from __future__ import annotations

import argparse
from pathlib import Path

from sasq import progress
from sasq.errors import UserError
from sasq.tools.cli import groups

NAME = "selftest"
HELP = (
    "self-check on the default model: the CPU chain (export, ORT = torch, calibrate, "
    "int8, lint, compare); --gpu: TensorRT engines vs ONNX Runtime CPU"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpu",
        action="store_true",
        help="run the GPU checks (TensorRT engines of every precision against ONNX Runtime on "
        "the CPU: two generations in a row, batches across the plan's range, refusals) "
        "instead of the CPU ones; needs sasq[gpu] and a GPU, or --simulate",
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="with --gpu: run those checks on the contract simulator (TensorRT's I/O rules "
        "over ONNX Runtime's CPU math), on any machine",
    )
    groups.out_folder(p, "out/selftest", "the checks' files")


def run(args: argparse.Namespace) -> int:
    from sasq.tools.apps.gpu_selftest import gpu_selftest
    from sasq.tools.apps.selftest import cpu_selftest

    if args.simulate and not args.gpu:
        raise UserError("--simulate runs the GPU checks on the contract simulator: add --gpu")
    out = Path(args.out)
    rc = gpu_selftest(out, args.simulate) if args.gpu else cpu_selftest(out)
    progress.wrote("selftest", args.out)
    return rc
