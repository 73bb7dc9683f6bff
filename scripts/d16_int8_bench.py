"""VAR-d16 (random weights, ~310M parameters) on ONNX Runtime: FP32 vs sasq int8 (int8 KV
cache, ort target; plain and shift-and-sum) vs the ORT peers, batch 1 (or --batch) with CFG, in one
bench run.

    python scripts/d16_int8_bench.py OUT_DIR [calib_images] [--peer] [--repeats N]
                                     [--prepare-only] [--bench-only] [--batch B]
                                     [--rows ROW ...] [--depth D] [--scales K]

Writes ``OUT_DIR/bench.json`` and ``bench.md`` with the rows ``ort`` (the FP32 baseline,
first), ``int8``, ``int8-ss`` and, with ``--peer``, ``peer-minmax`` (ORT's quantize_static,
every MatMul) and ``peer-linears`` (quantize_static on the linears only, attention left in
float: the fastest int8 peer measured). Exports, calibration and quantized folders are
cached in OUT_DIR, so ``--prepare-only`` (everything but the timing) can run first and
``--bench-only`` time them later on a quiet machine.

Random weights make the quality numbers meaningless; this measures speed and size. A
small VQVAE stands in for the official one (its decoder is not what is measured).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.calib.data_reader import record_step_feeds
from sasq.errors import UserError
from sasq.exporter import export_model
from sasq.exporter.peer import peer_quantize
from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
from sasq.exporter.quantize import quantize
from sasq.models import build
from sasq.models.config import OFFICIAL_PATCH_NUMS, ModelConfig, VQVAEConfig, official_var
from sasq.quant.cache import load_cache, save_cache
from sasq.tools.measure.bench import run_bench, to_markdown, write_report
from sasq.tools.measure.config import BenchConfig

QUANTIZED = {
    "int8": QuantConfig(),
    "int8-ss": QuantConfig(shift_sum=ShiftSumConfig(enabled=True)),
}
PEERS = {"peer-minmax": "all", "peer-linears": "linears"}


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("calib_images", nargs="?", type=int, default=4)
    ap.add_argument("--peer", action="store_true", help="add ORT quantize_static peers")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="images per generation (throughput)")
    ap.add_argument(
        "--rows", nargs="+", default=None, help="time only these prepared rows (after ort)"
    )
    ap.add_argument(
        "--depth", type=int, default=16, help="VAR depth (16: VAR-d16; 2: a smoke test)"
    )
    ap.add_argument(
        "--scales", type=int, default=10, choices=range(2, 11), metavar="K",
        help="the first K of the 10 official scales (10: VAR-d16; fewer: a smoke test)",
    )  # fmt: skip
    ap.add_argument("--weights-seed", type=int, default=0, help="seed of the random weights")
    ap.add_argument(
        "--no-roofline", action="store_true", help="skip the GEMM peaks and the roofline"
    )
    ap.add_argument("--prepare-only", action="store_true", help="export/calibrate/quantize")
    ap.add_argument("--bench-only", action="store_true", help="time what OUT_DIR holds")
    return ap.parse_args(argv)


def _prepare(model, out: Path, n: int, with_peer: bool) -> list[str]:
    fp = out / "fp"
    if not (fp / "manifest.json").exists():
        export_model(model, fp)
        print("exported", flush=True)
    cc = CalibConfig(num_samples=n, batch=2, progress=False)
    cache_path = out / f"calib-{n}.json"
    if cache_path.exists():
        cache = load_cache(cache_path)  # refused if the FP step graph changed since
    else:
        cache = calibrate(fp, cc).cache
        save_cache(cache, cache_path)
    print("calibrated", flush=True)
    rows = list(QUANTIZED)
    for name, cfg in QUANTIZED.items():
        if not (out / name / "manifest.json").exists():
            quantize(fp, cache, cfg, out / name)
        print(f"quantized {name}", flush=True)
    if with_peer:
        reader = None
        # ORT's quantize_static went past 24 GB on 4 images (20 step feeds) and stays near
        # 4 GB on 2: its speed is what is measured here, not its ranges.
        peer_cc = CalibConfig(num_samples=min(n, 2), batch=2, progress=False)
        for name, scope in PEERS.items():
            if not (out / name / "manifest.json").exists():
                reader = reader or record_step_feeds(fp, peer_cc)
                peer_quantize(fp, reader, "minmax", out / name, scope=scope)
            print(f"quantized {name}", flush=True)
            rows.append(name)
    return rows


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    var = official_var(args.depth, OFFICIAL_PATCH_NUMS[: args.scales])
    vae = VQVAEConfig(
        ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, using_sa=False, patch_nums=var.patch_nums
    )
    # the same random weights in every process (--bench-only checks them)
    torch.manual_seed(args.weights_seed)
    model = build(ModelConfig(vqvae=vae, var=var))
    if args.bench_only:
        rows = [*QUANTIZED, *(PEERS if args.peer else ())]
    else:
        rows = _prepare(model, args.out, args.calib_images, args.peer)
    if args.prepare_only:
        return
    if args.rows:
        unknown = sorted(set(args.rows) - set(rows))
        if unknown:
            raise SystemExit(f"--rows: not prepared here: {', '.join(unknown)}")
        rows = args.rows
    specs = ("ort", *(f"{k}={args.out / k}" for k in rows))
    bc = BenchConfig(
        backends=specs,
        batch_sizes=(args.batch,),
        repeats=args.repeats,
        warmup=1,
        threads=args.threads,
        gemm_peak=not args.no_roofline,
        roofline=not args.no_roofline,
    )
    result = run_bench(model, args.out / "fp", bc)
    write_report(result, args.out)
    print(to_markdown(result))
    print(json.dumps(result["runs"][0]["ratios"], indent=1))


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # e.g. a folder exported from other weights: one line, exit 1
        raise SystemExit(f"d16_int8_bench: {e}") from None
