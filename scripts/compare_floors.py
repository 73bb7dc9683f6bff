"""The numbers behind ``sasq compare``'s floors for quantized exports (README, "compare"):
lowest layer-output SQNR and pooled teacher-forced token agreement of healthy exports at
each width and of broken W8A8 ones (calibration ranges x100 or /100), on an embedded model.

    python scripts/compare_floors.py [default|digits32]

As ``sasq compare ort=FP ort=INT8``: 8 samples, seed 0, entropy calibration of 16 images;
the ort target in its default bounded u8 x s8 form, and W8A8 also in the full 8-bit form.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import warnings
from pathlib import Path

import onnx

from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.calib.layer_names import layer_names
from sasq.engines.backends import make_backend
from sasq.engines.int8_kernels import cpu_int8
from sasq.exporter import export_model
from sasq.exporter.qdq_config import QuantConfig
from sasq.exporter.quantize import quantize
from sasq.models import load_model
from sasq.quant.targets import quantizable_inputs
from sasq.tools.quality.compare import compare_backends, describe_side, judge
from sasq.tools.quality.config import CompareConfig

HEALTHY = {
    "W8A8": QuantConfig(),
    "W8A8 (full 8-bit form)": QuantConfig(u8s8="full"),
    "W6A6": QuantConfig(w_bits=6, a_bits=6),
    "W4A8": QuantConfig(w_bits=4),
    "W4A6": QuantConfig(w_bits=4, a_bits=6),
    "W8A8, 4-bit cache": QuantConfig(kv_bits=4),
}


def _scaled(cache, factor: float, names: set[str] | None):
    """The cache with the ranges of ``names`` (None: all) multiplied by ``factor``."""
    ranges = {
        k: dataclasses.replace(r, amax=r.amax * factor, steps=tuple(s * factor for s in r.steps))
        if names is None or k in names
        else r
        for k, r in cache.ranges.items()
    }
    return dataclasses.replace(cache, ranges=ranges)


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "default"
    model = load_model(name)
    with tempfile.TemporaryDirectory() as tmp:
        fp = Path(tmp) / "fp"
        export_model(model, fp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cache = calibrate(fp, CalibConfig(num_samples=16, batch=16, progress=False)).cache
        step = onnx.load(str(fp / "step.onnx"), load_external_data=False)
        names = layer_names(step)
        (fc2,) = [t for t in quantizable_inputs(step) if names[t.node] == "blocks.1.ffn.fc2"]
        rows = [(k, qc, cache) for k, qc in HEALTHY.items()]
        if name == "default":
            rows += [
                ("broken W8A8: fc2 input range x100", QuantConfig(),
                 _scaled(cache, 100, set(fc2.activations))),
                ("broken W8A8: fc2 input range /100", QuantConfig(),
                 _scaled(cache, 0.01, set(fc2.activations))),
                ("broken W8A8: every range x100", QuantConfig(), _scaled(cache, 100, None)),
            ]  # fmt: skip
        print(f"{name}: 8 samples, seed 0; u8 x s8 kernel {cpu_int8().kernel}")
        print("| export | lowest layer SQNR dB | token agreement (forced) | verdict |")
        print("|---|---|---|---|")
        for i, (label, qc, c) in enumerate(rows):
            q = quantize(fp, c, qc, Path(tmp) / f"q{i}")
            cc = CompareConfig()
            r = compare_backends(model.cfg, make_backend("ort", None, fp),
                                 make_backend("ort", None, q), cc)  # fmt: skip
            judge(r, [describe_side(f"ort={fp}"), describe_side(f"ort={q}")], model.cfg, cc)
            low = min(r["layer_sqnr_db"].items(), key=lambda kv: kv[1])
            print(f"| {label} | {low[1]:.1f} ({low[0]}) | {r['token_agreement_forced']:.2f} | "
                  f"{'PASS' if r['passed'] else 'FAIL'} |")  # fmt: skip


if __name__ == "__main__":
    main()
