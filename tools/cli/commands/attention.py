"""sasq attention: how concentrated each scale's attention is (the basis of shift-and-sum)."""

from __future__ import annotations

import argparse

from sasq import progress
from sasq.errors import UserError
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "attention"
HELP = "attention concentration: share of the attention on the top 1 and 5 percent of keys"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.tools.quality.config import AttentionConfig

    d = AttentionConfig()
    groups.model(p)
    p.add_argument(
        "--random",
        type=int,
        choices=[16, 20, 24, 30, 36],
        default=None,
        metavar="DEPTH",
        help="a randomly initialised official VAR of this depth instead of --model (no "
        "checkpoint needed; its VQVAE is the small one of the bench scripts)",
    )
    p.add_argument("--n", type=T.samples, default=d.images, help=f"images (default {d.images})")
    p.add_argument(
        "--batch", type=T.count, default=d.batch, help=f"images per batch (default {d.batch})"
    )
    groups.seed(p, d.seed, f"sampling seed (default {d.seed})")
    groups.out_folder(p, "out/attention", "attention.json and .md")


def run(args: argparse.Namespace) -> int:
    from sasq.tools.quality.attention_stats import (
        attention_concentration,
        to_markdown,
        write_report,
    )
    from sasq.tools.quality.config import AttentionConfig

    if args.random is not None:
        if args.model or args.vae or args.var:
            raise UserError("--random builds its own model: drop --model / --vae / --var")
        import torch

        from sasq.models import build, official

        torch.manual_seed(args.seed)
        model = build(official(args.random))
        model.path = None
    else:
        model = groups.load_model(args)
    ac = AttentionConfig(images=args.n, batch=args.batch, seed=args.seed)
    r = attention_concentration(model, ac)
    if args.random is not None:
        r["model"] = f"random VAR-d{args.random}"
    paths = write_report(r, checks.out_folder(args.out))
    print(to_markdown(r))
    progress.wrote("attention", *paths)
    return 0
