"""VAR-d16 (random weights, ~310M parameters) on ONNX Runtime: FP32 vs sasq int8 (plain and
shift-and-sum fused and expanded) vs the ORT peer, batch 1 with CFG, in one bench run.

    python scripts/d16_int8_bench.py OUT_DIR [calib_images] [--peer]

Random weights make the quality numbers meaningless; this measures speed and size. A
small VQVAE stands in for the official one (its decoder is not what is measured).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sasq.calib.cache import load_cache, save_cache
from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.calib.data_reader import record_step_feeds
from sasq.exporter import export_model
from sasq.exporter.peer import peer_quantize
from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
from sasq.exporter.quantize import quantize
from sasq.models import build
from sasq.models.config import ModelConfig, VQVAEConfig, official_var
from sasq.tools.bench import BenchConfig, run_bench, to_markdown, write_report


def main() -> None:
    out = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 4
    with_peer = "--peer" in sys.argv  # ORT's quantize_static holds several copies of 1.2 GB
    var = official_var(16)
    vae = VQVAEConfig(
        ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, using_sa=False, patch_nums=var.patch_nums
    )
    model = build(ModelConfig(vqvae=vae, var=var))
    fp = out / "fp"
    if not (fp / "manifest.json").exists():
        export_model(model, fp)
    cc = CalibConfig(num_samples=n, batch=2, progress=False)
    cache_path = out / f"calib-{n}.json"
    if cache_path.exists():
        cache = load_cache(cache_path)  # refused if the FP step graph changed since
    else:
        cache = calibrate(fp, cc).cache
        save_cache(cache, cache_path)
    print("calibrated", flush=True)
    quantize(fp, cache, QuantConfig(), out / "int8")
    print("quantized int8", flush=True)
    quantize(fp, cache, QuantConfig(shift_sum=ShiftSumConfig(enabled=True)), out / "int8-ss")
    ss = ShiftSumConfig(enabled=True, fuse=False)
    quantize(fp, cache, QuantConfig(shift_sum=ss), out / "int8-ss-expanded")
    print("quantized int8 + shift-and-sum (fused and expanded)", flush=True)
    rows = ["int8", "int8-ss", "int8-ss-expanded"]
    if with_peer:
        peer_quantize(fp, record_step_feeds(fp, cc), "minmax", out / "peer")
        rows.append("peer")
    specs = ("ort", *(f"{k}={out / k}" for k in rows))
    bc = BenchConfig(backends=specs, batch_sizes=(1,), repeats=3, warmup=1, threads=2)
    result = run_bench(model, fp, bc)
    write_report(result, out)
    print(to_markdown(result))
    print(json.dumps(result["runs"][0]["ratios"], indent=1))


if __name__ == "__main__":
    main()
