"""sasq calibrate: rollouts of the FP export -> the calibration cache (ranges, attention)."""

from __future__ import annotations

import argparse
import json

from sasq import progress
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "calibrate"
HELP = "rollouts of the FP export -> calibration cache (ranges, attention)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.calib.config import CalibConfig
    from sasq.tools.cli.fields import option

    groups.onnx(p, required=True)
    groups.threads(p)
    option(
        p, "--n", CalibConfig, "num_samples", type=T.samples, help="calibration images (CFG pairs)"
    )
    option(
        p,
        "--resample",
        CalibConfig,
        "resample",
        help="codebook resampling of the sampled tokens (shift-and-sum paper)",
    )
    option(
        p,
        "--observer",
        CalibConfig,
        "observer",
        help="how a tensor's range is chosen from what it saw",
    )
    option(
        p,
        "--percentile",
        CalibConfig,
        "percentile",
        type=T.percentile,
        help="the percentile observer's cut, in (0, 100]",
    )
    option(
        p,
        "--selection",
        CalibConfig,
        "selection",
        help="dgc: distribution-guided selection of CFG rows (PTQ4ARVG); all: every row",
    )
    option(p, "--seed", CalibConfig, "seed", type=T.seed, help="sampling seed of the rollouts")
    option(
        p,
        "--batch",
        CalibConfig,
        "batch",
        type=T.count,
        help="images per rollout batch; resampling is joint within a batch",
    )
    p.add_argument("--out", required=True, help="calibration cache (JSON)")


def run(args: argparse.Namespace) -> int:
    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.quant.cache import save_cache

    out = checks.out_file(args.out)
    cfg = CalibConfig(
        num_samples=args.n,
        resample=args.resample,
        observer=args.observer,
        percentile=args.percentile,
        selection=args.selection,
        seed=args.seed,
        batch=args.batch,
        threads=args.threads,
    )
    result = calibrate(args.onnx, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_cache(result.cache, out)
    tv = {
        si: {"plain": round(a, 4), "resampled": round(b, 4)}
        for si, (a, b) in result.tv_by_scale.items()
    }
    print(
        json.dumps(
            {
                "out": str(out),
                "tensors": len(result.cache.ranges),
                "tv_by_scale": tv,
                "seconds": round(result.seconds, 1),
                "peak_rss_mb": round(result.peak_rss_mb),
                "warnings": list(result.cache.warnings),
            },
            indent=2,
        )
    )
    progress.wrote("calibrate", out)
    return 0
