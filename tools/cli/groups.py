"""Flags several commands share, each defined once here: the model to load, the export
folder, threads, the seed, the output folder, the backend. A command's own flags live in
its module under ``commands/``."""

from __future__ import annotations

import argparse

from sasq.tools.cli import types as T

MODEL_HELP = (
    "model folder: config.json + vqvae/var safetensors, or the released "
    "vae_ch160v4096z32.pth + var_d{16,20,24,30,36}.pth (config read off the weights), "
    "or an embedded model by name: default (16 px, 4 scales), digits32 (32 px, 7 scales); "
    "default: default"
)


def model(p: argparse.ArgumentParser, files: bool = True) -> None:
    """``--model`` (and, with ``files``, ``--vae``/``--var`` checkpoint files)."""
    p.add_argument("--model", default=None, help=MODEL_HELP)
    if files:
        p.add_argument("--vae", default=None, metavar="FILE", help="VQVAE checkpoint, with --var")
        p.add_argument("--var", default=None, metavar="FILE", help="VAR checkpoint, with --vae")


def onnx(
    p: argparse.ArgumentParser,
    required: bool = False,
    help: str = "export folder written by 'sasq export'",
) -> None:
    p.add_argument("--onnx", required=required, default=None, metavar="DIR", help=help)


def threads(p: argparse.ArgumentParser, default: int = 0, help: str | None = None) -> None:
    p.add_argument(
        "--threads",
        type=T.threads,
        default=default,
        help=help or "ONNX Runtime intra-op threads; 0: all logical cores",
    )


def timing_threads(p: argparse.ArgumentParser, what: str) -> None:
    """``--threads`` of a command that times things: half the logical cores by default."""
    from sasq.tools.measure.steadiness import default_threads

    n = default_threads()
    threads(
        p,
        n,
        f"{what} threads; 0: all logical cores (default: half the logical cores, at least 1, "
        f"so timings hold steady on a shared machine: {n} here)",
    )


def seed(p: argparse.ArgumentParser, default: int = 0, help: str = "sampling seed") -> None:
    p.add_argument("--seed", type=T.seed, default=default, help=help)


def out_folder(p: argparse.ArgumentParser, default: str | None, holds: str) -> None:
    """``--out`` for a command that writes a report folder (``holds``: what goes in it)."""
    if default is None:
        p.add_argument("--out", required=True, help=f"folder for {holds} (required)")
    else:
        p.add_argument("--out", default=default, help=f"folder for {holds}")


def backend(p: argparse.ArgumentParser, default: str, kinds=None, help: str | None = None) -> None:
    """``--backend KIND`` (with ``--engine PLAN`` for a TensorRT plan), its choices from the
    registry of backends (``sasq.engines.backends``)."""
    from sasq.engines.backends import KINDS

    names = [k for k in KINDS if kinds is None or k in kinds]
    p.add_argument(
        "--backend",
        default=default,
        choices=names,
        help=help or "; ".join(f"{k}: {KINDS[k].help}" for k in names),
    )
    p.add_argument("--engine", default=None, metavar="PLAN", help="TensorRT plan for --backend trt")


def load_model(args: argparse.Namespace):
    """The model the ``model()`` flags name: --model, or --vae + --var, else the default."""
    from sasq.models import load_model as load

    return load(args.model, vae=getattr(args, "vae", None), var=getattr(args, "var", None))


def embedded_or_refuse(model, what: str) -> None:
    """The digits classifier scores the embedded models only."""
    from sasq.errors import UserError
    from sasq.models import EMBEDDED

    if model.path is None or model.path.resolve() not in {d.resolve() for d in EMBEDDED.values()}:
        raise UserError(
            f"{what} scores with the digits classifier: only the embedded models "
            f"({', '.join(EMBEDDED)})"
        )


def check_backend(args: argparse.Namespace) -> None:
    """What ``--backend`` needs of the other flags, before anything loads: the registry's
    own check (``engines.backends.check_args``), its parameters shown as flags by ``main``."""
    from sasq.engines.backends import check_args

    check_args(args.backend, args.onnx, args.engine)
