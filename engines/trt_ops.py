"""What TensorRT's ONNX parser accepts, per TensorRT major version, for the readiness lint.

The tables are data (``engines/trt_support/trt10.json``, ``trt11.json``): every row of
onnx-tensorrt's ``docs/operators.md`` for that version (op, supported, "Supported Types",
restrictions) with the URL and header line it was transcribed from. ``overlay.json`` holds
the two things sasq reads into them beyond the types column, each with its source: ops
that read only dimensions (Shape, Size), and the quantized types a layer takes between a
Q and its DQ (Concat of INT8: the int8 KV cache's append).

    table = support_table("11")
    table.accepts("Concat", "INT8")     # True (overlay: TensorRT's Concatenation layer)
    table.accepts("Concat", "FP8")      # False
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from onnx import TensorProto

from sasq.engines.config import TrtVersion
from sasq.errors import UserError

_DIR = Path(__file__).with_name("trt_support")


# ONNX element type -> the names the operators.md tables use. TensorRT's FP8 is E4M3
# (DataType kFP8: 1 sign, 4 exponent, 3 mantissa bits), so the other float8s have no name.
ONNX_TO_TRT = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.DOUBLE: "DOUBLE",
    TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.FLOAT4E2M1: "FP4",
    TensorProto.INT8: "INT8",
    TensorProto.INT4: "INT4",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
}


def trt_type_name(elem_type: int) -> str:
    """The table's name of an ONNX element type (the ONNX name when the table has none)."""
    return ONNX_TO_TRT.get(elem_type) or TensorProto.DataType.Name(elem_type)


@dataclass(frozen=True)
class OpSupport:
    supported: bool
    types: frozenset[str]
    restrictions: str = ""


@dataclass(frozen=True)
class SupportTable:
    """One TensorRT version's parser table plus sasq's sourced overlay."""

    version: str  # e.g. "10.15"
    major: int
    opset_min: int
    opset_max: int
    source_url: str
    data_types: frozenset[str]  # the ONNX data types the parser takes at all
    ops: Mapping[str, OpSupport]
    shape_only: frozenset[str]
    quantized_layer_types: Mapping[str, frozenset[str]]

    def supported_ops(self) -> frozenset[str]:
        return frozenset(op for op, s in self.ops.items() if s.supported)

    def accepts(self, op: str, dtype: str) -> bool:
        """Whether the parser takes ``op`` on a tensor of table type ``dtype``."""
        s = self.ops.get(op)
        if s is None or not s.supported:
            return False
        return (
            op in self.shape_only
            or dtype in s.types
            or dtype in self.quantized_layer_types.get(op, frozenset())
        )

    def label(self) -> str:
        return f"TensorRT {self.version}"


def _load(name: str) -> dict:
    return json.loads((_DIR / name).read_text())


@cache
def support_table(version: TrtVersion | str = TrtVersion.V10) -> SupportTable:
    """The table of TensorRT ``version`` ("10" or "11"); ``UserError`` for another."""
    try:
        v = TrtVersion(version.value if isinstance(version, TrtVersion) else str(version))
    except ValueError:
        raise UserError(f"no TensorRT {version} table; choose 10 or 11") from None
    d, overlay = _load(f"trt{v.value}.json"), _load("overlay.json")
    ops = {
        op: OpSupport(row["supported"], frozenset(row["types"]), row.get("restrictions", ""))
        for op, row in d["ops"].items()
    }
    quant = {op: frozenset(e["types"]) for op, e in overlay["quantized_layer_types"].items()}
    return SupportTable(
        version=d["tensorrt"],
        major=d["major"],
        opset_min=d["opset"]["min"],
        opset_max=d["opset"]["max"],
        source_url=d["source"]["url"],
        data_types=frozenset(d["data_types"]),
        ops=ops,
        shape_only=frozenset(overlay["shape_only_ops"]["ops"]),
        quantized_layer_types=quant,
    )


def ops_set(names: str) -> frozenset[str]:
    return frozenset(names.split())


# The ops TensorRT 10's parser accepts (kept for callers of the earlier constant).
TRT10_OPS = support_table(TrtVersion.V10).supported_ops()
