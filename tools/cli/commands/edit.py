"""sasq edit: zero-shot inpaint / outpaint / class-edit of an image through any backend."""

from __future__ import annotations

import argparse
import json

from sasq import progress
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "edit"
HELP = "zero-shot inpaint / outpaint / class-edit of an image (PNG sheet)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.engines.config import EditConfig, EditTask
    from sasq.tools.cli.fields import option

    groups.model(p)
    groups.onnx(p)
    groups.threads(p)
    p.add_argument(
        "--task",
        required=True,
        choices=[t.value for t in EditTask],
        help="inpaint: regenerate the --mask's white pixels; outpaint: centre the input on the "
        "canvas (one of the canvas' size or larger shrunk to half its side) and generate "
        "around it, no --mask; class-edit: regenerate the masked pixels (default: all) under "
        "--class",
    )
    p.add_argument("--image", required=True, help="input PNG (colour is converted to grey)")
    p.add_argument(
        "--mask",
        default=None,
        help="binary PNG: white = regenerate, black or transparent = keep (inpaint: required; "
        "class-edit default: all; outpaint takes none)",
    )
    p.add_argument(
        "--class",
        dest="cls",
        type=T.non_negative,
        default=None,
        help="condition (required by class-edit); default: unconditional",
    )
    groups.backend(p, "torch", help="as in 'sasq generate --help'")
    p.add_argument("--n", type=T.count, default=4, help="samples per input")
    option(p, "--seed", EditConfig, "seed", type=T.seed, help="sampling seed")
    option(
        p,
        "--rule",
        EditConfig,
        "rule",
        help="a token is regenerated if any / at least half of its pixels are masked",
    )
    p.add_argument(
        "--no-reencode",
        action="store_true",
        help="force the input's own tokens outside instead of re-encoding the residual",
    )
    p.add_argument("--out", required=True, help="PNG: input | mask | results")


def run(args: argparse.Namespace) -> int:
    from sasq.engines.backends import make_backend
    from sasq.engines.config import EditConfig, EditTask, TokenRule
    from sasq.engines.edit import check_class, edit, masked_psnr
    from sasq.models.memory import generation_estimate, require_fits
    from sasq.tools.apps.edit_files import load_inputs, save_edit_sheet
    from sasq.tools.report.image_grid import grid_title

    groups.check_backend(args)
    out = checks.out_file(args.out)
    model = groups.load_model(args)  # the VQVAE encoder runs host-side in torch for every backend
    task = EditTask(args.task)
    check_class(model.cfg, args.cls, task)
    require_fits(generation_estimate(model.cfg, args.n), f"editing {args.n} samples", "lower --n")
    image, mask, resized = load_inputs(args.image, args.mask, model.cfg, task)
    if args.backend != "torch" and args.onnx is not None:
        checks.made_from(model, args.onnx)  # the host-side encoder is --model's
    backend = make_backend(args.backend, model, args.onnx, args.threads, args.engine)
    ec = EditConfig(
        task, args.cls, args.seed, args.n, TokenRule(args.rule), reencode=not args.no_reencode
    )
    res = edit(model.cfg, model.vqvae, backend, image, mask, ec)
    cond = "uncond" if args.cls is None else f"class {args.cls}"
    title = grid_title(task.value, cond, args.backend, f"seed {args.seed}")
    save_edit_sheet(res, out, args.n, title=title)
    keep = res.mask.repeat_interleave(args.n, 0) == 0
    recon = res.recon.repeat_interleave(args.n, 0)
    psnr = masked_psnr(res.img, recon, keep) if bool(keep.any()) else None
    print(
        json.dumps(
            {
                "out": str(out),
                "task": task.value,
                "backend": args.backend,
                "seed": args.seed,
                "n": args.n,
                "resized": resized,
                "sampled_tokens": [int(t[0].sum()) for t in res.inside],
                # None: the whole image was regenerated
                "psnr_outside_db": round(psnr, 2) if psnr is not None else None,
            }
        )
    )
    for note in resized:  # after the work: a refusal stays one line
        progress.note("edit", note)
    progress.wrote("edit", out)
    return 0
