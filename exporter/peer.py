"""The peer quantizer: ONNX Runtime's own ``quantize_static`` on the same FP step graph
and the same calibration data (sasq's rollouts, handed over as a CalibrationDataReader).

Settings follow ORT's usual int8 QDQ setup (QDQ format, signed int8 activations and
weights, symmetric, per-channel weights), with the calibration method (MinMax or Entropy)
and the scope (every MatMul, or the linears only with attention in float) as the
variables; the result is a derived export folder that every sasq backend runs.

ORT's histogram (Entropy) calibrator stacks the runs of a tensor into one array, which
fails when the runs have different shapes, as the scales of VAR's one step graph do. So
for Entropy, ORT's own calibrator collects each scale's runs separately (its histograms
accumulate across ``collect_data`` calls), and its ranges reach ``quantize_static`` as
``TensorQuantOverrides`` (rmin / rmax).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import create_calibrator

from sasq import progress
from sasq.exporter.attention import attention_chains
from sasq.exporter.derive import derive_export
from sasq.exporter.manifest import verify


class FeedsReader(CalibrationDataReader):
    """A ``CalibrationDataReader`` over a list of feed dicts (one per step run)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)


class PeerMethod(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"


class PeerScope(str, Enum):
    """Which MatMuls the peer quantizes: ALL (ORT's default QDQ placement, attention
    products included) or LINEARS (weights' GEMMs only, attention left in float: the
    common int8 setup for transformers, and the fastest peer measured on ORT's CPU EP)."""

    ALL = "all"
    LINEARS = "linears"


def _entropy_overrides(step: Path, reader: FeedsReader, tmp: Path) -> dict:
    """ORT's Entropy ranges of every calibrated tensor, its runs collected scale by scale."""
    cal = create_calibrator(
        str(step),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"symmetric": True},
    )
    groups: dict[tuple, list] = {}
    for feeds in reader.feeds:
        groups.setdefault(tuple(v.shape for v in feeds.values()), []).append(feeds)
    for runs in groups.values():
        cal.collect_data(FeedsReader(runs))
    ranges = cal.compute_data()
    overrides = {}
    for name in ranges:
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in ranges[name].range_value)
        overrides[name] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    return overrides


def _attention_matmuls(step: Path) -> list[str]:
    return [n for qk, _, av in attention_chains(step) for n in (qk, av)]


def peer_quantize(
    onnx_dir: str | Path,
    reader: FeedsReader,
    method: PeerMethod | str,
    out_dir: str | Path,
    scope: PeerScope | str = PeerScope.ALL,
) -> Path:
    """ORT's quantize_static of the export's step graph -> a derived export at ``out_dir``."""
    method, scope = PeerMethod(method), PeerScope(scope)
    src = Path(onnx_dir)
    step = src / verify(src).graphs["step"].file
    options: dict = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
    }
    exclude = _attention_matmuls(step) if scope == PeerScope.LINEARS else []
    # ORT logs "Axis 1 is out-of-range ..." and its pre-processing advice through the root
    # logger: silenced here only.
    with tempfile.TemporaryDirectory() as tmp, progress.quiet_ort_logging():
        if method == PeerMethod.ENTROPY:
            options["TensorQuantOverrides"] = _entropy_overrides(step, reader, Path(tmp))
        q = Path(tmp) / "step_peer.onnx"
        reader.rewind()
        quantize_static(
            str(step),
            str(q),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
            # Only GEMMs: otherwise Transpose / Concat of the cache get Q/DQ and feed the
            # excluded attention products dequantized inputs anyway.
            op_types_to_quantize=["MatMul", "Gemm"] if scope == PeerScope.LINEARS else None,
            extra_options=options,
        )
        model = onnx.load(str(q))
    notes = {
        "quantizer": "onnxruntime.quantize_static",
        "method": method.value,
        "scope": scope.value,
        "calibration_runs": len(reader),
    }
    return derive_export(src, model, out_dir, "peer", notes)
