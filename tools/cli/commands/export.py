"""sasq export: the decoding loop as ONNX graphs (step, start, per-scale next, decoder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sasq import progress
from sasq.tools.cli import groups
from sasq.tools.cli import types as T

NAME = "export"
HELP = "export the decoding to ONNX (step, start, per-scale next, decoder)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.calib.config import GPSConfig
    from sasq.exporter.config import ExportConfig
    from sasq.exporter.qdq_config import BIT_WIDTHS
    from sasq.tools.cli.fields import option

    groups.model(p)
    p.add_argument("--out", required=True, help="folder for the ONNX graphs and manifest")
    option(
        p,
        "--opset",
        ExportConfig,
        "opset",
        type=T.int_in(18, 23),
        help=f"ONNX opset of the graphs, 18..23 (default: {ExportConfig.opset}, whose Gelu op "
        "runs 8x faster on ONNX Runtime than opset 18's Tanh/Pow/Mul chain)",
    )
    p.add_argument(
        "--static-batch",
        action="store_true",
        help="fix the batch size instead of a dynamic batch axis",
    )
    option(
        p,
        "--batch-size",
        ExportConfig,
        "batch_size",
        type=T.count,
        help="images, with --static-batch",
    )
    option(
        p,
        "--dtype",
        ExportConfig,
        "dtype",
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
        default=f"W{GPSConfig.w_bits}A{GPSConfig.a_bits}",
        choices=list(BIT_WIDTHS),
        help="bit widths GPS balances for (quantize the export at the same bits)",
    )
    option(
        p,
        "--gps-n",
        GPSConfig,
        "num_samples",
        type=T.samples,
        help="GPS calibration images (CFG pairs)",
    )
    option(p, "--seed", GPSConfig, "seed", type=T.seed, help="seed of the GPS rollouts")


def run(args: argparse.Namespace) -> int:
    from sasq.exporter import ExportConfig, export_model

    model = groups.load_model(args)
    out = Path(args.out)  # export_model builds beside it and swaps it into place
    cfg = ExportConfig(
        opset=args.opset,
        dynamic_batch=not args.static_batch,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    notes, report = {}, {}
    if args.gps:
        from sasq.calib.gps import GPSConfig, apply_gps
        from sasq.exporter import provenance
        from sasq.exporter.qdq_config import BIT_WIDTHS

        notes[provenance.KEY] = provenance.model_fingerprint(model)  # GPS: same FP function
        w, a = BIT_WIDTHS[args.gps_bits]
        model, gps = apply_gps(
            model, GPSConfig(num_samples=args.gps_n, w_bits=w, a_bits=a, seed=args.seed)
        )
        notes["gps"] = gps
        report["gps"] = {k: v for k, v in gps.items() if k != "layers"}
        report["gps"]["layers"] = len(gps["layers"])
    manifest = export_model(model, out, cfg, notes)
    sizes = {k: v.bytes for k, v in manifest.files.items()}
    result = {"out": str(out), "opset": manifest.opset, "files": sizes, **report}
    print(json.dumps(result, indent=2))
    progress.wrote("export", out)
    return 0
