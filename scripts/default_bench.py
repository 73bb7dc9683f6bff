"""The embedded default model on ONNX Runtime: FP32 vs sasq int8 (int8 KV cache, ort target;
plain and shift-and-sum) vs ONNX Runtime's own quantize_static (MinMax on every MatMul, and
on the linears only with attention in float), batches 1, 8 and 32, in one bench run.

    python scripts/default_bench.py OUT_DIR [--repeats 5]

Every quantized export comes from the same FP export and the same 32 calibration images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.calib.data_reader import record_step_feeds
from sasq.exporter import export_model
from sasq.exporter.peer import peer_quantize
from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
from sasq.exporter.quantize import quantize
from sasq.models import load_model
from sasq.tools.measure.bench import run_bench, to_markdown, write_report
from sasq.tools.measure.config import BenchConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    out, model = args.out, load_model()
    fp = out / "fp"
    export_model(model, fp)
    cc = CalibConfig(num_samples=32, observer="minmax", progress=False)
    cache = calibrate(fp, cc).cache
    exports = {
        "int8": QuantConfig(),
        "int8-ss": QuantConfig(shift_sum=ShiftSumConfig(enabled=True)),
    }
    for name, qc in exports.items():
        quantize(fp, cache, qc, out / name)
    reader = record_step_feeds(fp, cc)
    peers = {"peer-minmax": "all", "peer-linears": "linears"}
    for name, scope in peers.items():
        peer_quantize(fp, reader, "minmax", out / name, scope=scope)
    rows = [*exports, *peers]
    specs = ("ort", *(f"{k}={out / k}" for k in rows))
    bc = BenchConfig(
        backends=specs, batch_sizes=(1, 8, 32), repeats=args.repeats, warmup=1,
        threads=args.threads,
    )  # fmt: skip
    result = run_bench(model, fp, bc)
    write_report(result, out)
    print(to_markdown(result))
    print(json.dumps([r["ratios"] for r in result["runs"]], indent=1))


if __name__ == "__main__":
    main()
