"""sasq generate: class-conditional images through any backend, to a PNG grid and/or files."""

from __future__ import annotations

import argparse
import json

from sasq import progress
from sasq.errors import UserError
from sasq.tools.cli import checks, groups
from sasq.tools.cli import types as T

NAME = "generate"
HELP = "class-conditional images to a labelled PNG grid"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.engines.config import GenerateConfig
    from sasq.tools.cli.fields import option

    groups.model(p)
    groups.onnx(p)
    groups.threads(p)
    groups.backend(
        p,
        "torch",
        help="torch: PyTorch; torch-int8-cache: PyTorch with the int8 KV cache of the --onnx "
        "quantized export (its reference); ort / ort-cuda / ort-trt: the --onnx export under "
        "ONNX Runtime's CPU / CUDA / TensorRT provider; trt: a TensorRT plan (--engine)",
    )
    p.add_argument(
        "--class",
        dest="cls",
        type=T.non_negative,
        default=None,
        help="class id; default: cycle through all classes",
    )
    p.add_argument("--n", type=T.count, default=16, help="number of images")
    option(
        p, "--seed", GenerateConfig, "seed", type=T.seed, help="sampling seed of the first batch"
    )
    option(
        p,
        "--batch",
        GenerateConfig,
        "batch",
        type=T.count,
        help="images per batch (batch i: seed+i)",
    )
    p.add_argument(
        "--cfg",
        type=T.cfg_scale,
        default=None,
        help="classifier-free guidance at the last scale; default: the model's",
    )
    p.add_argument(
        "--top-k",
        type=T.top_k,
        default=None,
        help="sample from the k most likely tokens, 0: off; default: the model's",
    )
    p.add_argument(
        "--top-p",
        type=T.top_p,
        default=None,
        help="nucleus sampling: the smallest set of tokens holding this probability mass, "
        "0: off; default: the model's",
    )
    p.add_argument(
        "--more-smooth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="official Gumbel-softmax smoothing of each scale's latent (visual quality; "
        "the published FIDs use none); default: the model's",
    )
    p.add_argument("--nrow", type=T.count, default=8, help="images per grid row")
    p.add_argument(
        "--out", default=None, help="PNG grid to write (this or --out-dir, or both); default: none"
    )
    p.add_argument(
        "--out-dir",
        default=None,
        metavar="DIR",
        help="also (or instead) write each image as its own PNG at the model's resolution, "
        "NNNN_classC.png, ready for 'sasq edit --image'; default: none",
    )
    p.add_argument(
        "--scale",
        type=T.int_in(1, 64),
        default=1,
        help="with --out-dir, also an enlarged copy NNNN_classC_xK.png of each image "
        "(nearest; edit shrinks it back exactly); default: 1, no copy",
    )
    p.add_argument("--save-tokens", default=None, help="also write per-scale token ids (.npz)")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from sasq.engines.backends import make_backend
    from sasq.engines.config import GenerateConfig
    from sasq.engines.generate import generate_many, labels_for, save_tokens
    from sasq.engines.trt_plan import BatchRange
    from sasq.tools.report.image_grid import check_grid_fits, grid_title, save_grid, save_images

    if args.out is None and args.out_dir is None:
        raise UserError("nothing to write: give --out GRID.png, --out-dir DIR, or both")
    if args.scale > 1 and args.out_dir is None:
        raise UserError("--scale enlarges the --out-dir copies: give --out-dir DIR")
    groups.check_backend(args)
    out = checks.out_file(args.out) if args.out else None
    out_dir = checks.out_folder(args.out_dir) if args.out_dir else None
    if args.backend == "torch" or args.onnx is None or {args.model, args.vae, args.var} != {None}:
        model = groups.load_model(args)
        cfg = model.cfg
        if args.backend != "torch" and args.onnx is not None:
            checks.made_from(model, args.onnx)
    else:  # an ONNX backend needs only the export and the config it records
        from sasq.exporter import verify
        from sasq.models import ModelConfig

        model, cfg = None, ModelConfig.from_dict(verify(args.onnx).model_config)
    asked = dict(cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, more_smooth=args.more_smooth)
    given = {k: v for k, v in asked.items() if v is not None}
    sampling = dataclasses.replace(cfg.sampling, **given)
    if out is not None:
        check_grid_fits(cfg, args.n, args.nrow)  # before even the labels are made
    labels = labels_for(cfg, args.cls, args.n)
    b = min(args.batch, len(labels))  # the batches this run makes: the ORT TensorRT EP's range
    backend = make_backend(args.backend, model, args.onnx, args.threads, args.engine,
                           BatchRange(1, b, b))  # fmt: skip
    gc = GenerateConfig(labels, args.seed, args.batch, sampling, progress=True)
    gen = generate_many(cfg, backend, gc)
    written: list = []
    if out is not None:
        title = grid_title(args.backend, f"seed {args.seed}", f"cfg {sampling.cfg:g}")
        names = [str(c) for c in labels]
        written.append(save_grid(gen.img, out, labels=names, nrow=args.nrow, title=title))
    if out_dir is not None:
        files = save_images(gen.img, out_dir, [str(c) for c in labels], args.scale)
        written.append(f"{out_dir}/ ({len(files)} PNGs)")
    if args.save_tokens:
        tokens = checks.out_file(args.save_tokens)
        tokens.parent.mkdir(parents=True, exist_ok=True)
        save_tokens(gen, labels, tokens)
        written.append(tokens)
    print(
        json.dumps(
            {
                "out": str(out) if out else None,
                "out_dir": str(out_dir) if out_dir else None,
                "n": len(labels),
                "backend": args.backend,
                "seed": args.seed,
                "sampling": vars(sampling),
            }
        )
    )
    progress.wrote("generate", *written)
    return 0
