"""The arguments of each ``sasq`` subcommand, one function per command (``_p_<name>``)."""

from __future__ import annotations

import argparse

from sasq.exporter.config import ExportConfig, StepDtype
from sasq.exporter.qdq_config import BIT_WIDTHS, Precision, QuantConfig, RestDtype
from sasq.tools import cli_types as T


def _add_model(p: argparse.ArgumentParser, files: bool = True) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="model folder: config.json + vqvae/var safetensors, or the released "
        "vae_ch160v4096z32.pth + var_d{16,20,24,30,36}.pth (config read off the weights), "
        "or an embedded model by name: default (16 px, 4 scales), digits32 (32 px, 7 scales); "
        "default: default",
    )
    if files:
        p.add_argument("--vae", default=None, metavar="FILE", help="VQVAE checkpoint, with --var")
        p.add_argument("--var", default=None, metavar="FILE", help="VAR checkpoint, with --vae")


def _add_onnx(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--onnx",
        required=required,
        default=None,
        metavar="DIR",
        help="export folder written by 'sasq export'",
    )
    p.add_argument(
        "--threads",
        type=T.threads,
        default=0,
        help="ONNX Runtime intra-op threads; 0: all logical cores",
    )


def _timing_threads(p: argparse.ArgumentParser, what: str) -> None:
    """``--threads`` of a command that times things: half the logical cores by default, since
    every logical core measured unsteady on a shared machine (``bench.default_threads``)."""
    from sasq.tools.bench import default_threads

    n = default_threads()
    p.add_argument(
        "--threads",
        type=T.threads,
        default=n,
        help=f"{what} threads; 0: all logical cores (default: half the logical cores, at least "
        f"1, so timings hold steady on a shared machine: {n} here)",
    )


def args_generate(p: argparse.ArgumentParser) -> None:
    from sasq.engines.generate import BACKENDS

    _add_model(p)
    _add_onnx(p)
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="torch: PyTorch; torch-int8-cache: PyTorch with the int8 KV cache of the --onnx "
        "quantized export (its reference); ort / ort-cuda / ort-trt: the --onnx export under "
        "ONNX Runtime's CPU / CUDA / TensorRT provider",
    )
    p.add_argument(
        "--class",
        dest="cls",
        type=T.non_negative,
        default=None,
        help="class id; default: cycle through all classes",
    )
    p.add_argument("--n", type=T.count, default=16, help="number of images")
    p.add_argument("--seed", type=T.seed, default=0, help="sampling seed of the first batch")
    p.add_argument("--batch", type=T.count, default=64, help="images per batch (batch i: seed+i)")
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
    p.add_argument("--engine", default=None, help="TensorRT plan for --backend trt")


def args_export(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    p.add_argument("--out", required=True, help="folder for the ONNX graphs and manifest")
    p.add_argument(
        "--opset",
        type=T.int_in(18, 23),
        default=ExportConfig.opset,
        help=f"ONNX opset of the graphs, 18..23 (default: {ExportConfig.opset}, whose Gelu op "
        "runs 8x faster on ONNX Runtime than opset 18's Tanh/Pow/Mul chain)",
    )
    p.add_argument(
        "--static-batch",
        action="store_true",
        help="fix the batch size instead of a dynamic batch axis",
    )
    p.add_argument("--batch-size", type=T.count, default=1, help="images, with --static-batch")
    p.add_argument(
        "--dtype",
        default=ExportConfig.dtype.value,
        choices=[d.value for d in StepDtype],
        help="float type of the step graph: fp16 writes its casts into the graph (TensorRT 11 "
        "has no FP16 builder flag); x_BlC, mod_BMC, logits stay fp32, the K/V cache is fp16, "
        "reductions run in fp32",
    )
    p.add_argument(
        "--gps",
        action="store_true",
        help="PTQ4ARVG gain-projected scaling: balance the inputs of qkv, fc1 and the head "
        "for quantization, folded into the AdaLN linears (same FP function, new weights)",
    )
    p.add_argument(
        "--gps-bits",
        default="W8A8",
        choices=list(BIT_WIDTHS),
        help="bit widths GPS balances for (quantize the export at the same bits)",
    )
    p.add_argument("--gps-n", type=T.samples, default=32, help="GPS calibration images (CFG pairs)")
    p.add_argument("--seed", type=T.seed, default=0, help="seed of the GPS rollouts")


def args_calibrate(p: argparse.ArgumentParser) -> None:
    from sasq.calib.observers import ObserverMethod
    from sasq.calib.resample import ResampleMode
    from sasq.calib.selection import SelectionMethod

    _add_onnx(p, required=True)
    p.add_argument("--n", type=T.samples, default=32, help="calibration images (CFG pairs)")
    p.add_argument(
        "--resample",
        default="ours",
        choices=[m.value for m in ResampleMode],
        help="codebook resampling of the sampled tokens (shift-and-sum paper)",
    )
    p.add_argument(
        "--observer",
        default="entropy",
        choices=[m.value for m in ObserverMethod],
        help="how a tensor's range is chosen from what it saw",
    )
    p.add_argument(
        "--percentile",
        type=T.percentile,
        default=99.99,
        help="the percentile observer's cut, in (0, 100]",
    )
    p.add_argument(
        "--selection",
        default="all",
        choices=[m.value for m in SelectionMethod],
        help="dgc: distribution-guided selection of CFG rows (PTQ4ARVG); all: every row",
    )
    p.add_argument("--seed", type=T.seed, default=0, help="sampling seed of the rollouts")
    p.add_argument(
        "--batch",
        type=T.count,
        default=32,
        help="images per rollout batch; resampling is joint within a batch",
    )
    p.add_argument("--out", required=True, help="calibration cache (JSON)")


def args_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, metavar="DIR", help="FP export folder")
    p.add_argument("--calib", required=True, help="calibration cache of that export")
    p.add_argument("--out", required=True, help="folder for the quantized export")
    p.add_argument(
        "--bits",
        default="W8A8",
        choices=list(BIT_WIDTHS),
        help="W8A8 is real int8; W6A6, W4A8 and W4A6 are simulated with Clip",
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
        type=T.fraction,
        default=0.01,
        help="extra AV work as a fraction of the step's MatMul work",
    )
    p.add_argument(
        "--max-n", type=int, default=8, choices=(1, 2, 4, 8), help="most copies of one key token"
    )
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
    p.add_argument(
        "--target",
        default="ort",
        choices=["ort", "tensorrt"],
        help="runtime the graph is written for: ort (ONNX Runtime CPU kernels; shift-and-sum "
        "as two int8 products) or tensorrt (explicit quantization; shift-and-sum fused into "
        "one GEMM); both share the calibration and the int8 KV cache (default: ort)",
    )
    p.add_argument(
        "--u8s8",
        default="bounded",
        choices=["bounded", "full"],
        help="ort target: bounded writes 7-bit weights and queries and uint8 probabilities, "
        "so ONNX Runtime's u8 x s8 int8 kernels are exact on every x86 CPU (without VNNI "
        "they saturate on 8-bit operands); full keeps 8 bits everywhere, exact where the CPU "
        "has VNNI, run as slower s8 x s8 elsewhere (default: bounded)",
    )
    p.add_argument(
        "--kv-cache",
        default="int8",
        choices=["int8", "fp32"],
        help="int8: K and V stored as int8 when appended, never float between steps; fp32: "
        "the float cache re-quantized at every step (the earlier graph) (default: int8)",
    )
    p.add_argument(
        "--kv-bits",
        type=int,
        default=None,
        choices=range(2, 9),
        metavar="{2..8}",
        help="bits of the KV cache, below 8 simulated with Clip (default: the activations')",
    )
    p.add_argument(
        "--precision",
        default=QuantConfig.precision.value,
        choices=[v.value for v in Precision],
        help="int8, or fp8: E4M3 Q/DQ for Hopper/Ada TensorRT (scales amax/448, the KV cache "
        "stored as fp8; needs --target tensorrt and W8A8; ONNX Runtime runs it as reference)",
    )
    p.add_argument(
        "--rest",
        default=QuantConfig.rest.value,
        choices=[v.value for v in RestDtype],
        help="float type of everything not quantized: fp16 writes the casts into the graph "
        "(TensorRT 11's strongly typed int8 + fp16 engine; reductions stay fp32)",
    )
    p.add_argument(
        "--cache-budget",
        type=T.float_in(0.0, 1.0),
        default=0.05,
        help="shift-and-sum copies stored in the int8 cache: at most this fraction of its "
        "rows (default: 0.05)",
    )


def args_bench(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    p.add_argument(
        "--onnx",
        default=None,
        metavar="DIR",
        help="FP export folder ('sasq export') that the ort backend runs; needed by the "
        "default --backends",
    )
    _timing_threads(p, "torch and ONNX Runtime intra-op")
    p.add_argument(
        "--backends",
        default="torch,ort",
        help="comma list, the first is the baseline: torch, ort (the --onnx export), LABEL=DIR "
        "(any export under ONNX Runtime's CPU, named LABEL in the report: e.g. "
        "int8=out/onnx_int8), ort-cuda=DIR, ort-trt=DIR (its CUDA / TensorRT providers), "
        "trt=DIR,PLAN (a sasq build plan); a label may extend the kind, e.g. "
        "trt-int8=DIR,PLAN",
    )
    p.add_argument("--batch-sizes", type=T.int_list(), default=(1, 8), help="e.g. 1,8,32")
    p.add_argument("--repeats", type=T.count, default=5, help="timed runs; the median is kept")
    p.add_argument("--warmup", type=T.non_negative, default=1, help="untimed runs per backend")
    p.add_argument("--seed", type=T.seed, default=0, help="sampling seed")
    p.add_argument(
        "--out",
        default="out/bench",
        help="folder for bench.json, bench.md and bench.png (latency per scale, speed-ups)",
    )
    p.add_argument(
        "--int8-kernels",
        default="auto",
        choices=["auto", "u8s8", "s8s8"],
        help="ONNX Runtime's int8 kernels: auto runs a graph whose u8 x s8 products could "
        "saturate on this CPU (no VNNI) as exact s8 x s8, else u8 x s8; u8s8 / s8s8 force "
        "one (default: auto)",
    )


def args_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, metavar="DIR", help="export folder (FP or Q/DQ)")
    p.add_argument("--out", required=True, help="engine plan file to write")
    p.add_argument(
        "--batch-range",
        default="1:16",
        metavar="MIN:MAX",
        help="images per batch the engine serves (the step runs 2x rows for CFG); MIN:OPT:MAX "
        "also sets the batch TensorRT tunes for (default: 8, clipped into the range)",
    )
    p.add_argument(
        "--simulate",
        action="store_true",
        help="build the contract simulator's engine (ONNX Runtime math under TensorRT's I/O "
        "rules: profiles, non-null addresses, no aliasing), no GPU needed",
    )
    p.add_argument(
        "--trt-version",
        choices=["10", "11"],
        default="10",
        help="with --simulate: whose ONNX parser table (ops and types) the graph must pass",
    )
    p.add_argument("--opt-level", type=T.int_in(0, 5), default=3, help="builder optimization 0-5")
    p.add_argument("--timing-cache", default=None, help="timing cache file (read and written)")
    p.add_argument("--rebuild", action="store_true", help="replace a stale or foreign engine")


def args_compare(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    p.add_argument("a", help="reference: torch | ort=DIR | ort-cuda=DIR | trt=DIR,PLAN")
    p.add_argument("b", help="the backend checked against it (same forms)")
    p.add_argument("--n", type=T.count, default=8, help="samples")
    p.add_argument("--seed", type=T.seed, default=0, help="sampling seed")
    p.add_argument(
        "--atol",
        type=T.tolerance,
        default=1e-4,
        help="absolute logit tolerance, FP against FP (a quantized side is judged by tokens "
        "and SQNR instead)",
    )
    p.add_argument("--rtol", type=T.tolerance, default=1e-4, help="relative logit tolerance")
    p.add_argument("--out", default="out/compare", help="folder for compare.json and .md")


def args_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, metavar="DIR", help="export folder to profile")
    _timing_threads(p, "ONNX Runtime intra-op")
    p.add_argument("--batch", type=T.count, default=1, help="images (2x rows with CFG)")
    p.add_argument("--seed", type=T.seed, default=0, help="sampling seed")
    p.add_argument(
        "--repeats",
        type=T.count,
        default=5,
        help="profiled generations; every time is their median, with min/max/spread (default: 5)",
    )
    p.add_argument(
        "--warmup",
        type=T.int_in(0, 100),
        default=1,
        help="generations run before them, not counted (default: 1)",
    )
    p.add_argument("--out", default="out/profile", help="folder for profile.json and .md")


def args_selftest(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--out", default="out/selftest", help="folder for the checks' files")


def args_eval(p: argparse.ArgumentParser) -> None:
    from sasq.tools.evaluate import ROWS, EvalConfig

    d = EvalConfig()
    _add_model(p)
    p.add_argument(
        "--per-class",
        type=T.samples,
        default=d.per_class,
        help=f"samples per class (default {d.per_class}: {10 * d.per_class:,} images on a "
        "10-class model such as the embedded ones)",
    )
    p.add_argument(
        "--bits",
        default=",".join(d.bits),
        help=f"comma-separated bit widths, any of {', '.join(BIT_WIDTHS)}",
    )
    p.add_argument("--rows", default=",".join(d.rows), help=f"any of {', '.join(ROWS)}")
    p.add_argument(
        "--bootstrap",
        type=T.int_in(100, 100_000),
        default=d.bootstrap,
        help="half-samples drawn for every 95%% interval (tools/intervals.py)",
    )
    p.add_argument("--calib-n", type=T.samples, default=d.calib_samples, help="calibration images")
    p.add_argument("--seed", type=T.seed, default=d.seed, help="sampling seed")
    p.add_argument("--out", default="out/eval", help="folder for eval.json and eval.md")


def args_train_default(p: argparse.ArgumentParser) -> None:
    from sasq.tools.train_default import TrainConfig

    d = TrainConfig()
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument(
        "--preset",
        choices=["default", "digits32"],
        default="default",
        help="default: 16 px, scales 1-4 (30 tokens); digits32: 32 px, scales 1,2,3,4,5,6,8 "
        "(155 tokens) (default: default)",
    )
    p.add_argument("--seed", type=T.seed, default=d.seed, help="seed of data order and init")
    p.add_argument(
        "--vae-steps", type=T.non_negative, default=d.vae_steps, help="VQVAE training steps"
    )
    p.add_argument(
        "--var-steps", type=T.non_negative, default=d.var_steps, help="VAR training steps"
    )
    p.add_argument(
        "--var-batch",
        type=T.int_in(1, 4096),
        default=d.var_batch,
        help=f"token pyramids per VAR step (default {d.var_batch})",
    )
    p.add_argument("--threads", type=T.int_in(1, 4096), default=d.threads, help="torch threads")


def args_lint(p: argparse.ArgumentParser) -> None:
    from sasq.engines.lint import LintConfig
    from sasq.engines.trt_ops import TrtVersion

    p.add_argument("model_onnx", metavar="MODEL.onnx", help="a Q/DQ ONNX model")
    p.add_argument(
        "--trt-version",
        default=LintConfig.trt_version.value,
        choices=[v.value for v in TrtVersion],
        help="TensorRT major version whose ONNX parser table (ops and per-op dtypes, "
        "engines/trt_support/) the tensorrt target is checked against",
    )
    p.add_argument(
        "--target",
        default=None,
        choices=["tensorrt", "ort"],
        help="whose rules (default: the target recorded by 'sasq quantize' beside the model, "
        "else tensorrt)",
    )
    p.add_argument("--min-opset", type=T.int_in(1, 99), default=13, help="lowest opset accepted")
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


def args_demo(p: argparse.ArgumentParser) -> None:
    _add_model(p, files=False)
    _timing_threads(p, "the bench's torch and ONNX Runtime intra-op")
    p.add_argument("--out", default="out/demo", help="folder for images and report")


def args_edit(p: argparse.ArgumentParser) -> None:
    from sasq.engines.generate import BACKENDS
    from sasq.tools.edit import EditTask, TokenRule

    _add_model(p)
    _add_onnx(p)
    p.add_argument(
        "--task",
        required=True,
        choices=[t.value for t in EditTask],
        help="inpaint: regenerate the --mask's white pixels; outpaint: centre the input on "
        "the canvas (one of the canvas' size or larger shrunk to half its side) and generate "
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
    p.add_argument(
        "--backend", default="torch", choices=BACKENDS, help="as in 'sasq generate --help'"
    )
    p.add_argument("--engine", default=None, help="TensorRT plan for --backend trt")
    p.add_argument("--n", type=T.count, default=4, help="samples per input")
    p.add_argument("--seed", type=T.seed, default=0, help="sampling seed")
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


def args_attention(p: argparse.ArgumentParser) -> None:
    from sasq.tools.attention_stats import AttentionConfig

    d = AttentionConfig()
    _add_model(p)
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
    p.add_argument("--seed", type=T.seed, default=d.seed, help=f"sampling seed (default {d.seed})")
    p.add_argument("--out", default="out/attention", help="folder for attention.json and .md")


def args_sweep_budget(p: argparse.ArgumentParser) -> None:
    from sasq.tools.budget_sweep import SweepConfig

    d = SweepConfig()
    _add_model(p, files=False)
    p.add_argument(
        "--budgets",
        type=T.fractions,
        default=d.budgets,
        help="shift-and-sum budgets, fractions in [0, 1] including 0 (default "
        + ",".join(f"{b:g}" for b in d.budgets)
        + ")",
    )
    p.add_argument(
        "--bits",
        default=",".join(d.bits),
        help=f"bit widths, any of {', '.join(BIT_WIDTHS)} (default {','.join(d.bits)})",
    )
    p.add_argument(
        "--kv-bits",
        default="A,4",
        help="cache widths to sweep: A (the activations' bits) or 2..8 (default A,4)",
    )
    p.add_argument(
        "--per-class",
        type=T.samples,
        default=d.per_class,
        help=f"samples per class (default {d.per_class})",
    )
    p.add_argument("--calib-n", type=T.samples, default=d.calib_samples, help="calibration images")
    p.add_argument(
        "--bootstrap",
        type=T.int_in(100, 100_000),
        default=d.bootstrap,
        help=f"half-samples drawn for the 95%% intervals (default {d.bootstrap})",
    )
    p.add_argument(
        "--bench-batch", type=T.count, default=d.bench_batch, help="batch of the timing run"
    )
    p.add_argument(
        "--repeats", type=T.int_in(1, 1000), default=d.bench_repeats, help="timing repeats"
    )
    p.add_argument("--threads", type=T.threads, default=d.threads, help="ONNX Runtime threads")
    p.add_argument("--seed", type=T.seed, default=d.seed, help=f"sampling seed (default {d.seed})")
    p.add_argument("--out", default="out/sweep", help="folder for sweep.json, .md and .png")


def args_serve(p: argparse.ArgumentParser) -> None:
    from sasq.engines.generate import BACKENDS

    p.add_argument("--onnx", required=True, metavar="DIR", help="export folder to serve (required)")
    p.add_argument(
        "--backend",
        default="ort",
        choices=[b for b in BACKENDS if b.startswith(("ort", "trt"))],
        help="ort / ort-cuda / ort-trt: ONNX Runtime's CPU / CUDA / TensorRT provider; trt: "
        "a TensorRT engine (--engine); default: ort",
    )
    p.add_argument("--engine", default=None, help="TensorRT plan for --backend trt (default: none)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (0.0.0.0 for every interface); default: 127.0.0.1",
    )
    p.add_argument(
        "--port",
        type=T.int_in(0, 65533),
        default=8000,
        help="HTTP port; gRPC uses port+1 and metrics port+2 (0: free ports); default: 8000",
    )
    p.add_argument(
        "--max-batch",
        type=T.int_in(1, 4096),
        default=16,
        help="largest batch Triton's dynamic batcher forms (and largest request); default: 16",
    )
    p.add_argument(
        "--max-queue-delay-ms",
        type=T.float_in(0.0, 60_000.0),
        default=5.0,
        help="how long a request may wait for others to batch with; default: 5",
    )
    p.add_argument(
        "--instances",
        type=T.int_in(1, 64),
        default=1,
        help="model instances (Triton instance group), each with its own backend; default: 1",
    )
    p.add_argument(
        "--threads",
        type=T.threads,
        default=1,
        help="ONNX Runtime intra-op threads per instance (0: ONNX Runtime's default, every "
        "core); scale with --instances rather than threads on a small or shared machine; "
        "default: 1",
    )
    p.add_argument(
        "--more-smooth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Gumbel-softmax smoothing for every request; default: the export's setting",
    )
    p.add_argument(
        "--write-repo",
        default=None,
        metavar="OUT",
        help="write a Triton model repository of the export (Python backend, for a stock "
        "tritonserver with sasq installed) to the new folder OUT and exit; default: serve",
    )


def args_loadtest(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="server URL, e.g. http://127.0.0.1:8000 (loopback only)")
    p.add_argument(
        "--concurrency",
        type=T.int_list(1, 1024),
        default=(1, 4, 16, 32),
        help="comma list of concurrent clients, one level after another; default: 1,4,16,32",
    )
    p.add_argument(
        "--duration",
        type=T.float_in(0.0, 3600.0, lo_open=True),
        default=20.0,
        help="seconds per concurrency level (also ends at --requests); default: 20",
    )
    p.add_argument(
        "--requests",
        type=T.int_in(1, 10**7),
        default=1000,
        help="most requests per concurrency level (also ends at --duration); default: 1000",
    )
    p.add_argument(
        "--warmup",
        type=T.int_in(0, 10_000),
        default=4,
        help="unmeasured requests before each level; default: 4",
    )
    p.add_argument("--seed", type=T.seed, default=0, help="first request's seed; default: 0")
    p.add_argument(
        "--timeout",
        type=T.float_in(0.0, 3600.0, lo_open=True),
        default=60.0,
        help="seconds a single request may take before it counts as failed; default: 60",
    )
    p.add_argument(
        "--malformed",
        type=T.fraction,
        default=0.0,
        help="share of requests sent malformed (unknown class, wrong dtype), each of which "
        "must fail while every valid one succeeds: a soak; default: 0",
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder for loadtest.json, loadtest.md and loadtest.png (required)",
    )
