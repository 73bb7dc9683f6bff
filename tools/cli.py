"""The ``sasq`` command line: one parser, subcommands registered from a table.

Each command is a thin function over the Python API. A user's mistake (``UserError``, a bad
checkpoint, a missing file) prints one line and exits 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from sasq.models.checkpoint import CheckpointError
from sasq.tools.errors import UserError

EXIT_USER_ERROR = 2


def _load(args: argparse.Namespace):
    """The model: --model, else the one an --onnx export was made from, else the default."""
    from sasq.models import load_model

    return load_model(args.model)


def _out_path(p: str) -> Path:
    path = Path(p)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {parent}: {e.strerror}") from None
    if not _writable(parent):
        raise UserError(f"output folder is not writable: {parent}")
    return path


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


# ----- commands -----


def cmd_generate(args: argparse.Namespace) -> int:
    from sasq.models import SamplingConfig
    from sasq.tools.generate import (
        GenerateConfig,
        generate_many,
        labels_for,
        make_backend,
        save_tokens,
    )
    from sasq.tools.image_grid import save_grid

    out = _out_path(args.out)
    if args.backend == "torch" or args.model is not None or args.onnx is None:
        model = _load(args)
        cfg = model.cfg
    else:  # an ONNX backend needs only the export and the config it records
        from sasq.exporter import verify
        from sasq.models import ModelConfig

        model, cfg = None, ModelConfig.from_dict(verify(args.onnx).model_config)
    base = cfg.sampling
    sampling = SamplingConfig(
        cfg=base.cfg if args.cfg is None else args.cfg,
        top_k=base.top_k if args.top_k is None else args.top_k,
        top_p=base.top_p if args.top_p is None else args.top_p,
    )
    labels = labels_for(cfg, args.cls, args.n)
    backend = make_backend(args.backend, model, args.onnx, args.threads, args.engine)
    gen = generate_many(cfg, backend, GenerateConfig(labels, args.seed, args.batch, sampling))
    save_grid(
        gen.img,
        out,
        labels=[str(c) for c in labels],
        nrow=args.nrow,
        title=f"{args.backend} seed={args.seed} cfg={sampling.cfg}",
    )
    if args.save_tokens:
        save_tokens(gen, labels, _out_path(args.save_tokens))
    print(
        json.dumps(
            {
                "out": str(out),
                "n": len(labels),
                "backend": args.backend,
                "seed": args.seed,
                "sampling": vars(sampling),
            }
        )
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sasq.exporter import ExportConfig, export_model

    model = _load(args)
    out = _out_path(args.out)  # export_model builds beside it and renames into place
    cfg = ExportConfig(
        opset=args.opset, dynamic_batch=not args.static_batch, batch_size=args.batch_size
    )
    manifest = export_model(model, out, cfg)
    sizes = {k: v.bytes for k, v in manifest.files.items()}
    print(json.dumps({"out": str(out), "opset": manifest.opset, "files": sizes}, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sasq.calib.cache import save_cache
    from sasq.calib.calibrate import CalibConfig, calibrate

    out = _out_path(args.out)
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
    return 0


BIT_WIDTHS = {"W8A8": (8, 8), "W6A6": (6, 6), "W4A8": (4, 8)}


def cmd_quantize(args: argparse.Namespace) -> int:
    from sasq.calib.cache import load_cache
    from sasq.engines.lint import LintConfig, lint
    from sasq.exporter.manifest import verify
    from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
    from sasq.exporter.quantize import quantize

    w, a = BIT_WIDTHS[args.bits]
    shift = ShiftSumConfig(
        enabled=args.shift_sum,
        mode=args.shift_sum_mode,
        budget=args.budget,
        max_n=args.max_n,
        fuse=not args.no_fuse,
    )
    cfg = QuantConfig(
        w_bits=w,
        a_bits=a,
        float_nodes=tuple(args.float_node),
        shift_sum=shift,
        static_per_step=args.per_step,
    )
    out = _out_path(args.out)  # quantize builds beside it and renames into place
    quantize(args.onnx, load_cache(args.calib), cfg, out)
    manifest = verify(out)
    quant = manifest.extra["quant"]
    violations = lint(
        out / manifest.graphs["step"].file, LintConfig(float_nodes=tuple(quant["kept_float"]))
    )
    print(
        json.dumps(
            {
                "out": str(out),
                "bits": args.bits,
                "quantized": len(quant["quantized"]),
                "kept_float": len(quant["kept_float"]),
                "shift_sum": args.shift_sum,
                "tensorrt_lint": "PASSED"
                if not violations
                else f"{len(violations)} violation(s)"
                + (
                    " (expected: narrower than int8 is simulated with Clip)"
                    if w < 8 or a < 8
                    else ""
                ),
            },
            indent=2,
        )
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sasq.tools.bench import BenchConfig, run_bench, to_markdown, write_report

    cfg = BenchConfig(
        backends=tuple(args.backends.split(",")),
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        threads=args.threads,
    )
    out = _out_path(str(Path(args.out) / "bench.json")).parent
    result = run_bench(_load(args), args.onnx, cfg)
    write_report(result, out)
    print(to_markdown(result))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from sasq.engines.trt_engine import EngineConfig, build_engine

    out = _out_path(args.out)
    cfg = EngineConfig(
        batch=args.batch,
        builder_optimization_level=args.opt_level,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
    )
    plan = build_engine(args.onnx, out, cfg, rebuild=args.rebuild)
    print(json.dumps({"engine": str(plan), "bytes": plan.stat().st_size}))
    return 0


def _backend_from_spec(spec: str, model_dir: str | None):
    """``torch`` | ``ort=DIR`` | ``ort-cuda=DIR`` | ``trt=DIR,PLAN``."""
    from sasq.tools.generate import make_backend

    name, _, rest = spec.partition("=")
    if name == "torch":
        return make_backend("torch", _load(argparse.Namespace(model=model_dir)))
    if not rest:
        raise UserError(f"backend {spec!r}: expected torch, ort=DIR, ort-cuda=DIR or trt=DIR,PLAN")
    onnx_dir, _, engine = rest.partition(",")
    return make_backend(name, None, onnx_dir, 0, engine or None)


def cmd_compare(args: argparse.Namespace) -> int:
    from sasq.exporter import verify
    from sasq.models import ModelConfig
    from sasq.tools.compare import CompareConfig, compare_backends, to_markdown, write_report

    a, b = _backend_from_spec(args.a, args.model), _backend_from_spec(args.b, args.model)
    onnx = next((s.partition("=")[2].partition(",")[0] for s in (args.a, args.b) if "=" in s), None)
    cfg = ModelConfig.from_dict(verify(onnx).model_config) if onnx else _load(args).cfg
    cc = CompareConfig(n=args.n, seed=args.seed, atol=args.atol, rtol=args.rtol)
    report = compare_backends(cfg, a, b, cc)
    write_report(report, _out_path(str(Path(args.out) / "compare.json")).parent)
    print(to_markdown(report))
    return 0 if report["passed"] else 1


def cmd_selftest(args: argparse.Namespace) -> int:
    from sasq.tools.selftest import gpu_selftest

    if not args.gpu:
        raise UserError("nothing to test: pass --gpu")
    return gpu_selftest(Path(args.out))


def cmd_eval(args: argparse.Namespace) -> int:
    from sasq.tools.evaluate import EvalConfig, evaluate, to_markdown, write_report
    from sasq.tools.quality import default_classifier

    if args.model is not None:
        raise UserError("eval scores with the digits classifier: only the embedded model")
    ec = EvalConfig(
        per_class=args.per_class,
        bits=tuple(args.bits.split(",")),
        rows=tuple(args.rows.split(",")),
        calib_samples=args.calib_n,
        seed=args.seed,
    )
    unknown = [b for b in ec.bits if b not in ("W8A8", "W6A6", "W4A8")]
    if unknown:
        raise UserError(f"unknown bit widths {unknown}; choose from W8A8, W6A6, W4A8")
    result = evaluate(_load(args), default_classifier(), ec)
    write_report(result, _out_path(str(Path(args.out) / "eval.json")).parent)
    print(to_markdown(result))
    return 0


def cmd_train_default(args: argparse.Namespace) -> int:
    from sasq.tools.train_default import TrainConfig, train_default

    tc = TrainConfig(
        seed=args.seed, vae_steps=args.vae_steps, var_steps=args.var_steps, threads=args.threads
    )
    metrics = train_default(_out_path(str(Path(args.out) / "x")).parent, tc)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from sasq.engines.lint import Coverage, LintConfig, format_violations, lint

    path = Path(args.model_onnx)
    if not path.is_file():
        raise UserError(f"no such ONNX file: {path}")
    float_nodes = list(args.float_node)
    manifest = path.parent / "manifest.json"
    if manifest.is_file():  # a quantized export records which GEMMs it kept float, and why
        kept = json.loads(manifest.read_text()).get("extra", {}).get("quant", {})
        float_nodes += list(kept.get("kept_float", {}))
        if kept:
            print(f"using {len(kept.get('kept_float', {}))} float nodes from {manifest}")
    cfg = LintConfig(
        min_opset=args.min_opset,
        coverage=Coverage.TOUCHED if args.touched_only else Coverage.ALL,
        float_nodes=tuple(float_nodes),
    )
    try:
        violations = lint(path, cfg)
    except Exception as e:  # onnx raises DecodeError and friends for a file that is not ONNX
        raise UserError(f"{path}: cannot be read as ONNX ({type(e).__name__})") from None
    print(format_violations(violations))
    return 1 if violations else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sasq.tools.demo import run_demo

    print(run_demo(Path(args.out), model_dir=args.model))
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from sasq.tools.edit import (
        EditConfig,
        EditTask,
        TokenRule,
        check_class,
        check_export,
        edit,
        load_inputs,
        masked_psnr,
        save_edit_sheet,
    )
    from sasq.tools.generate import make_backend

    out = _out_path(args.out)
    model = _load(args)  # the VQVAE encoder runs host-side in torch for every backend
    task = EditTask(args.task)
    check_class(model.cfg, args.cls, task)
    image, mask = load_inputs(args.image, args.mask, model.cfg, task)
    if args.backend != "torch" and args.onnx is not None:
        check_export(args.onnx, model.cfg)
    backend = make_backend(args.backend, model, args.onnx, args.threads, args.engine)
    ec = EditConfig(
        task, args.cls, args.seed, args.n, TokenRule(args.rule), reencode=not args.no_reencode
    )
    res = edit(model.cfg, model.vqvae, backend, image, mask, ec)
    cond = "uncond" if args.cls is None else f"class {args.cls}"
    save_edit_sheet(res, out, args.n, title=f"{task.value} {cond} {args.backend} seed={args.seed}")
    keep = res.mask.repeat_interleave(args.n, 0) == 0
    recon = res.recon.repeat_interleave(args.n, 0)
    print(
        json.dumps(
            {
                "out": str(out),
                "task": task.value,
                "backend": args.backend,
                "seed": args.seed,
                "n": args.n,
                "sampled_tokens": [int(t[0].sum()) for t in res.inside],
                "psnr_outside_db": round(masked_psnr(res.img, recon, keep), 2)
                if bool(keep.any())
                else None,  # the whole image was regenerated
            }
        )
    )
    return 0


# ----- parser -----


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage dump, the hint to use --help instead."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="model folder (config.json + vqvae/var safetensors); default: embedded",
    )


def _add_onnx(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--onnx",
        required=required,
        default=None,
        metavar="DIR",
        help="export folder written by 'sasq export'",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)"
    )


def _p_generate(p: argparse.ArgumentParser) -> None:
    from sasq.tools.generate import BACKENDS

    _add_model(p)
    _add_onnx(p)
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="torch: PyTorch; ort / ort-cuda / ort-trt: the --onnx export under "
        "ONNX Runtime's CPU / CUDA / TensorRT provider",
    )
    p.add_argument(
        "--class",
        dest="cls",
        type=int,
        default=None,
        help="class id; default: cycle through all classes",
    )
    p.add_argument("--n", type=int, default=16, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64, help="images per batch (batch i: seed+i)")
    p.add_argument("--cfg", type=float, default=None, help="guidance at the last scale")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--nrow", type=int, default=8, help="images per grid row")
    p.add_argument("--out", required=True, help="PNG grid to write")
    p.add_argument("--save-tokens", default=None, help="also write per-scale token ids (.npz)")
    p.add_argument("--engine", default=None, help="TensorRT plan for --backend trt")


def _p_export(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    p.add_argument("--out", required=True, help="folder for the ONNX graphs and manifest")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument(
        "--static-batch",
        action="store_true",
        help="fix the batch size instead of a dynamic batch axis",
    )
    p.add_argument("--batch-size", type=int, default=1, help="images, with --static-batch")


def _p_calibrate(p: argparse.ArgumentParser) -> None:
    from sasq.calib.observers import ObserverMethod
    from sasq.calib.resample import ResampleMode
    from sasq.calib.selection import SelectionMethod

    _add_onnx(p, required=True)
    p.add_argument("--n", type=int, default=32, help="calibration images (CFG pairs)")
    p.add_argument(
        "--resample",
        default="ours",
        choices=[m.value for m in ResampleMode],
        help="codebook resampling of the sampled tokens (shift-and-sum paper)",
    )
    p.add_argument("--observer", default="entropy", choices=[m.value for m in ObserverMethod])
    p.add_argument("--percentile", type=float, default=99.99)
    p.add_argument(
        "--selection",
        default="all",
        choices=[m.value for m in SelectionMethod],
        help="dgc: distribution-guided selection of CFG rows (PTQ4ARVG)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch",
        type=int,
        default=32,
        help="images per rollout batch; resampling is joint within a batch",
    )
    p.add_argument("--out", required=True, help="calibration cache (JSON)")


def _p_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, metavar="DIR", help="FP export folder")
    p.add_argument("--calib", required=True, help="calibration cache of that export")
    p.add_argument("--out", required=True, help="folder for the quantized export")
    p.add_argument(
        "--bits",
        default="W8A8",
        choices=list(BIT_WIDTHS),
        help="W8A8 is real int8; W6A6 / W4A8 are simulated with Clip",
    )
    p.add_argument(
        "--float-node",
        action="append",
        default=[],
        metavar="GLOB",
        help="MatMul node or weight names kept float, e.g. '*ffn.fc2*'",
    )
    p.add_argument(
        "--shift-sum",
        action="store_true",
        help="shift-and-sum quantization of the attention-value product",
    )
    p.add_argument(
        "--shift-sum-mode",
        default="budget",
        choices=["budget", "all2"],
        help="budget: tokens by attention under --budget; all2: every token n=2",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=0.01,
        help="extra AV work as a fraction of the step's MatMul work",
    )
    p.add_argument("--max-n", type=int, default=8, help="most copies of one key token")
    p.add_argument(
        "--no-fuse",
        action="store_true",
        help="write the expanded branches instead of one fused AV MatMul",
    )
    p.add_argument(
        "--per-step",
        action="store_true",
        help="static per-step activation scales (PTQ4ARVG token-wise)",
    )


def _p_bench(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    _add_onnx(p)
    p.add_argument("--backends", default="torch,ort", help="comma list; first is the baseline")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/bench", help="folder for bench.json and bench.md")


def _p_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, metavar="DIR", help="export folder (FP or Q/DQ)")
    p.add_argument("--out", required=True, help="engine plan file to write")
    p.add_argument("--batch", type=int, default=1, help="images per batch (2x rows for CFG)")
    p.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0-5")
    p.add_argument("--timing-cache", default=None, help="timing cache file (read and written)")
    p.add_argument("--rebuild", action="store_true", help="replace a stale or foreign engine")


def _p_compare(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    p.add_argument("a", help="reference: torch | ort=DIR | ort-cuda=DIR | trt=DIR,PLAN")
    p.add_argument("b", help="the backend checked against it (same forms)")
    p.add_argument("--n", type=int, default=8, help="samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--out", default="out/compare", help="folder for compare.json and .md")


def _p_selftest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", action="store_true", help="TensorRT fp16/int8 engines on the GPU")
    p.add_argument("--out", default="out/selftest")


def _p_eval(p: argparse.ArgumentParser) -> None:
    from sasq.tools.evaluate import ROWS

    _add_model(p)
    p.add_argument("--per-class", type=int, default=100, help="samples per class (default 1,000)")
    p.add_argument("--bits", default="W8A8,W6A6,W4A8")
    p.add_argument("--rows", default=",".join(ROWS), help=f"any of {', '.join(ROWS)}")
    p.add_argument("--calib-n", type=int, default=32, help="calibration images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/eval", help="folder for eval.json and eval.md")


def _p_train_default(p: argparse.ArgumentParser) -> None:
    from sasq.tools.train_default import TrainConfig

    d = TrainConfig()
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--vae-steps", type=int, default=d.vae_steps)
    p.add_argument("--var-steps", type=int, default=d.var_steps)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")


def _p_lint(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_onnx", metavar="MODEL.onnx", help="a Q/DQ ONNX model")
    p.add_argument("--min-opset", type=int, default=13)
    p.add_argument(
        "--touched-only",
        action="store_true",
        help="check only MatMuls that already have a DequantizeLinear input",
    )
    p.add_argument(
        "--float-node",
        action="append",
        default=[],
        metavar="GLOB",
        help="MatMul/Gemm node names allowed to stay float (repeatable)",
    )


def _p_demo(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    p.add_argument("--out", default="out/demo", help="folder for images and report")


def _p_edit(p: argparse.ArgumentParser) -> None:
    from sasq.tools.edit import EditTask, TokenRule
    from sasq.tools.generate import BACKENDS

    _add_model(p)
    _add_onnx(p)
    p.add_argument("--task", required=True, choices=[t.value for t in EditTask])
    p.add_argument("--image", required=True, help="input PNG (colour is converted to grey)")
    p.add_argument(
        "--mask", default=None, help="binary PNG, white = regenerate (class-edit default: all)"
    )
    p.add_argument(
        "--class",
        dest="cls",
        type=int,
        default=None,
        help="condition (required by class-edit); default: unconditional",
    )
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--engine", default=None, help="TensorRT plan for --backend trt")
    p.add_argument("--n", type=int, default=4, help="samples per input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rule",
        default=TokenRule.ANY.value,
        choices=[r.value for r in TokenRule],
        help="a token is regenerated if any / at least half of its pixels are masked",
    )
    p.add_argument(
        "--no-reencode",
        action="store_true",
        help="force the input's own tokens outside instead of re-encoding the residual",
    )
    p.add_argument("--out", required=True, help="PNG: input | mask | results")


# name -> (help, add-arguments, run)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "generate": ("class-conditional images to a labelled PNG grid", _p_generate, cmd_generate),
    "edit": (
        "zero-shot inpaint / outpaint / class-edit of an image (PNG sheet)",
        _p_edit,
        cmd_edit,
    ),
    "export": (
        "export the decoding to ONNX (step, start, per-scale next, decoder)",
        _p_export,
        cmd_export,
    ),
    "calibrate": (
        "rollouts of the FP export -> calibration cache (ranges, attention)",
        _p_calibrate,
        cmd_calibrate,
    ),
    "quantize": (
        "FP export + calibration cache -> TensorRT-ready Q/DQ export (shift-and-sum option)",
        _p_quantize,
        cmd_quantize,
    ),
    "bench": ("per-scale latency and images/s of backends side by side", _p_bench, cmd_bench),
    "build": (
        "build a TensorRT engine of an export's step graph (one profile per scale)",
        _p_build,
        cmd_build,
    ),
    "compare": (
        "compare two backends scale by scale on the same inputs (exit 1 if off)",
        _p_compare,
        cmd_compare,
    ),
    "selftest": ("GPU self-check: TensorRT engines vs ONNX Runtime CPU", _p_selftest, cmd_selftest),
    "eval": (
        "the paper-style quality table: quantizers x bit widths vs FP (IS, FID, FID2FP, ...)",
        _p_eval,
        cmd_eval,
    ),
    "train-default": (
        "train the embedded digits model (VQVAE, VAR, classifier)",
        _p_train_default,
        cmd_train_default,
    ),
    "lint": (
        "check a Q/DQ ONNX against TensorRT's explicit-quantization rules (exit 1 if any)",
        _p_lint,
        cmd_lint,
    ),
    "demo": ("run the whole chain on the embedded model", _p_demo, cmd_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sasq",
        description="Quantized deployment of VAR image models: export, calibrate, quantize "
        "(shift-and-sum int8), run on ONNX Runtime / TensorRT, benchmark and evaluate.",
    )
    from sasq import __version__

    parser.add_argument("--version", action="version", version=f"sasq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.run(args)
    except (UserError, CheckpointError) as e:
        print(f"sasq {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"sasq {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
