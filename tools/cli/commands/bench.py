"""sasq bench: per-scale latency and images/s of backends side by side, in one run."""

from __future__ import annotations

import argparse

from sasq import progress
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "bench"
HELP = "per-scale latency and images/s of backends side by side"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.tools.cli.fields import option
    from sasq.tools.measure.config import BenchConfig

    groups.model(p)
    groups.onnx(
        p,
        help="FP export folder ('sasq export') that the ort backend runs; needed by the "
        "default --backends",
    )
    groups.timing_threads(p, "torch and ONNX Runtime intra-op")
    p.add_argument(
        "--backends",
        default=",".join(BenchConfig.backends),
        help="comma list, the first is the baseline: torch, ort (the --onnx export), LABEL=DIR "
        "(any export under ONNX Runtime's CPU, named LABEL in the report: e.g. "
        "int8=out/onnx_int8), ort-cuda=DIR, ort-trt=DIR (its CUDA / "
        "TensorRT providers), trt=DIR,PLAN (a sasq build plan); a label may extend the "
        "kind, e.g. trt-int8=DIR,PLAN",
    )
    option(p, "--batch-sizes", BenchConfig, "batch_sizes", type=T.int_list(), help="e.g. 1,8,32")
    option(
        p, "--repeats", BenchConfig, "repeats", type=T.count, help="timed runs; the median is kept"
    )
    option(
        p, "--warmup", BenchConfig, "warmup", type=T.non_negative, help="untimed runs per backend"
    )
    option(p, "--seed", BenchConfig, "seed", type=T.seed, help="sampling seed")
    option(
        p,
        "--roofline",
        BenchConfig,
        "roofline",
        action=argparse.BooleanOptionalAction,
        help="each CPU row's scales against the machine's limit: the model's GEMMs as plain "
        "MatMuls and its weights at the memory bandwidth, timed after the runs (default: on)",
    )
    groups.out_folder(
        p, "out/bench", "bench.json, bench.md and bench.png (latency per scale, speed-ups)"
    )
    option(
        p,
        "--int8-kernels",
        BenchConfig,
        "int8_kernels",
        choices=["auto", "u8s8", "s8s8"],
        help="ONNX Runtime's int8 kernels: auto runs a graph whose u8 x s8 products could "
        "saturate on this CPU (no VNNI) as exact s8 x s8, else u8 x s8; u8s8 / s8s8 force "
        "one (default: auto)",
    )


def run(args: argparse.Namespace) -> int:
    from sasq.engines.backends import split_specs
    from sasq.tools.measure.bench import require_folders, run_bench, to_markdown, write_report
    from sasq.tools.measure.config import BenchConfig

    cfg = BenchConfig(
        backends=split_specs(args.backends),
        batch_sizes=tuple(args.batch_sizes),
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        threads=args.threads,
        int8_kernels=args.int8_kernels,
        roofline=args.roofline,
    )
    out = checks.out_folder(args.out)
    require_folders(cfg.backends, args.onnx)  # before the model loads
    result = run_bench(groups.load_model(args), args.onnx, cfg)
    paths = write_report(result, out)
    print(to_markdown(result))
    progress.wrote("bench", *paths)
    return 0
