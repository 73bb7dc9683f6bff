"""sasq train-default: train the embedded digits model (VQVAE, VAR, classifier)."""

from __future__ import annotations

import argparse
import json

from sasq import progress
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "train-default"
HELP = "train the embedded digits model (VQVAE, VAR, classifier)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.tools.cli.fields import option
    from sasq.tools.train.config import TrainConfig

    d = TrainConfig()
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument(
        "--preset",
        choices=["default", "digits32"],
        default="default",
        help="default: 16 px, scales 1-4 (30 tokens); digits32: 32 px, scales 1,2,3,4,5,6,8 "
        "(155 tokens) (default: default)",
    )
    groups.seed(p, d.seed, "seed of data order and init")
    option(
        p, "--vae-steps", TrainConfig, "vae_steps", type=T.non_negative, help="VQVAE training steps"
    )
    option(
        p, "--var-steps", TrainConfig, "var_steps", type=T.non_negative, help="VAR training steps"
    )
    option(
        p,
        "--var-batch",
        TrainConfig,
        "var_batch",
        type=T.int_in(1, 4096),
        help=f"token pyramids per VAR step (default {d.var_batch})",
    )
    option(p, "--threads", TrainConfig, "threads", type=T.int_in(1, 4096), help="torch threads")


def run(args: argparse.Namespace) -> int:
    from sasq.models.config import PRESETS
    from sasq.tools.train.config import TrainConfig
    from sasq.tools.train.train_default import train_default

    tc = TrainConfig(
        seed=args.seed,
        vae_steps=args.vae_steps,
        var_steps=args.var_steps,
        var_batch=args.var_batch,
        threads=args.threads,
    )
    metrics = train_default(checks.out_folder(args.out), tc, PRESETS[args.preset](), args.preset)
    print(json.dumps(metrics, indent=2))
    progress.wrote("train-default", args.out)
    return 0
