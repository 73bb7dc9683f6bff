"""``sasq eval`` rows for the graphs TensorRT 10/11 get: the tensorrt target's int8 graph with
an fp32 or an fp16 rest, its FP8 E4M3 form (plain and shift-and-sum), and the fp16 export,
all run by ONNX Runtime's CPU EP as the reference of their numerics (fp16 tensors computed
in fp32 per op and rounded, fp8 Q/DQ by ORT's reference kernels). 8-bit cells only (W8A8);
same calibration as the ``plain`` row (minmax, no resampling)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sasq.engines.backends import make_backend

if TYPE_CHECKING:
    from sasq.engines.decode import StepBackend

# row -> (precision, rest, shift-and-sum); "fp16" is the export itself, unquantized
PRECISION_ROWS = {
    "trt-int8": ("int8", "fp32", False),
    "trt-int8-fp16": ("int8", "fp16", False),
    "trt-fp8": ("fp8", "fp32", False),
    "trt-fp8-shift-sum": ("fp8", "fp32", True),
    "fp16": None,
}
# Each row's paired difference is taken against the row it changes one thing of.
PRECISION_BASELINE = {
    "trt-int8": None,
    "trt-int8-fp16": "trt-int8",
    "trt-fp8": "trt-int8",
    "trt-fp8-shift-sum": "trt-fp8",
    "fp16": None,
}
PRECISION_NOTES = (
    (("trt-int8", "trt-int8-fp16", "trt-fp8", "trt-fp8-shift-sum"),
     "ROWS: --target tensorrt (W8A8 only), minmax calibration as plain; -fp16: everything not "
     "quantized in fp16; fp8: E4M3 Q/DQ (scales amax/448, fp8 KV cache); fp8 shift-and-sum "
     "shifts by fractions of the value's own E4M3 step; run by ONNX Runtime's CPU kernels"),
    (("fp16",), "fp16: sasq export --dtype fp16 (the step's floats in fp16, reductions fp32), "
     "run by ONNX Runtime (fp16 storage, each op computed in fp32 and rounded)"),
)  # fmt: skip


def precision_backend(ws, row: str, bits: str) -> StepBackend | None:
    """The backend of one cell of these rows (``ws``: ``evaluate.Workspace``), or None for
    a bit width other than W8A8."""
    if bits != "W8A8":
        return None
    return make_backend("ort", None, _folder(ws, row))


def _folder(ws, row: str) -> Path:
    from sasq.exporter import ExportConfig, export_model
    from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
    from sasq.exporter.quantize import quantize

    out = ws.root / row
    if out.exists():
        return out
    if PRECISION_ROWS[row] is None:
        export_model(ws.model, out, ExportConfig(dtype="fp16", progress=False))
        return out
    precision, rest, shift = PRECISION_ROWS[row]
    qc = QuantConfig(
        target="tensorrt",
        precision=precision,
        rest=rest,
        shift_sum=ShiftSumConfig(enabled=shift),
    )
    return quantize(ws.fp, ws.cache("none"), qc, out)
