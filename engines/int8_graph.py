"""The int8 products ONNX Runtime's CPU EP runs for a graph, read off the graph ORT itself
optimizes: which are u8 x s8 and whether each can saturate on a CPU without VNNI.

    for p in int8_products("out/int8/step.onnx"):
        print(p.node, p.op_type, p.a_type, p.a_range, p.b_type, p.b_range, p.can_saturate)

ORT is asked to save its optimized graph (``SessionOptions.optimized_model_filepath``) at
the extended level, where its Q/DQ rewrites happen (s8 -> u8 activations, DQ -> MatMul ->
MatMulIntegerToFloat / QLinearMatMul); those rewrites depend on the platform only through
``session.qdqisint8allowed``, which is set to 0 here as x86 has it, so the answer is the
same on every machine (only MLAS's kernel choice depends on the CPU: ``int8_kernels``).

Each fused node's integer operands are bounded by following them back to what made them:
an initializer's own values; a QuantizeLinear's grid applied to the range of its float
input (Softmax: [0, 1]; a constant Clip: its bounds; Relu / Sigmoid); an integer Clip's
bounds; ops that only move or pick data; a Concat's union. Anything else (a graph input
such as the int8 KV cache, another int8 op's output) can hold any value of its type.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from sasq.engines.int8_kernels import pair_sum_fits
from sasq.engines.ort_session import INT8_DISABLED_OPTIMIZERS

# Ops that move or pick elements without changing them (a range passes through input 0).
_MOVES = frozenset({"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten",
                    "Expand", "Slice", "Gather", "GatherElements", "Tile"})  # fmt: skip
_TYPES = {TensorProto.UINT8: (0, 255, "uint8"), TensorProto.INT8: (-128, 127, "int8")}
# op -> (A, A zero point, B, B zero point) input positions of ORT's integer GEMMs.
_GEMMS = {
    "MatMulIntegerToFloat": (0, 4, 1, 5),
    "MatMulInteger": (0, 2, 1, 3),
    "QLinearMatMul": (0, 2, 3, 5),
    "QGemm": (0, 2, 3, 5),
}
_MAX_DEPTH = 64


@dataclass(frozen=True)
class Int8Product:
    """One integer GEMM of ORT's optimized graph (named after the MatMul it replaced):
    its operands' types and the raw integer values they can hold."""

    node: str
    op_type: str
    a_type: str
    a_range: tuple[int, int]
    b_type: str
    b_range: tuple[int, int]

    @property
    def u8s8(self) -> bool:
        return self.a_type == "uint8" and self.b_type == "int8"

    @property
    def can_saturate(self) -> bool:
        """A u8 x s8 product with a pair of operands whose int16 sum can overflow."""
        return self.u8s8 and not pair_sum_fits(self.a_range, self.b_range)

    def as_dict(self) -> dict:
        return {"node": self.node, "op": self.op_type, "a": [self.a_type, *self.a_range],
                "b": [self.b_type, *self.b_range], "can_saturate": self.can_saturate}  # fmt: skip


class _Bounds:
    """Ranges of the tensors of one (optimized) graph."""

    def __init__(self, model: onnx.ModelProto, base_dir: Path | None):
        g = model.graph
        self.base_dir = base_dir
        self.producer = {o: n for n in g.node for o in n.output if o}
        self.inits = {t.name: t for t in g.initializer}
        self.types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info]}

    def array(self, x: str) -> np.ndarray | None:
        t = self.inits.get(x)
        if t is None:
            return None
        if t.data_location == TensorProto.EXTERNAL:
            return numpy_helper.to_array(t, str(self.base_dir or "."))
        return numpy_helper.to_array(t)

    def scalar(self, x: str) -> float | None:
        v = self.array(x) if x else None
        return float(v.ravel()[0]) if v is not None and v.size == 1 else None

    def int_type(self, x: str, zp: str, depth: int = 0) -> int | None:
        """The element type of integer tensor x: its zero point's, else where it came from."""
        if zp and zp in self.inits:
            return self.inits[zp].data_type
        if x in self.inits:
            return self.inits[x].data_type
        if x in self.types:
            return self.types[x]
        p = self.producer.get(x)
        if p is None or depth > _MAX_DEPTH:
            return None
        if p.op_type == "QuantizeLinear":
            return self.int_type("", p.input[2] if len(p.input) > 2 else "") or TensorProto.UINT8
        if p.op_type in _MOVES or p.op_type in ("Clip", "Concat"):
            return self.int_type(p.input[0], "", depth + 1)
        return None

    def int_range(self, x: str, elem: int, depth: int = 0) -> tuple[int, int]:
        lo, hi, _ = _TYPES[elem]
        v = self.array(x)
        if v is not None:
            return int(v.min()), int(v.max())
        p = self.producer.get(x)
        if p is None or depth > _MAX_DEPTH:
            return lo, hi
        op = p.op_type
        if op in _MOVES:
            return self.int_range(p.input[0], elem, depth + 1)
        if op == "Concat":
            rs = [self.int_range(i, elem, depth + 1) for i in p.input]
            return min(r[0] for r in rs), max(r[1] for r in rs)
        if op == "Clip":
            r = self.int_range(p.input[0], elem, depth + 1)
            c_lo, c_hi = (self.scalar(p.input[i]) if len(p.input) > i else None for i in (1, 2))
            return (max(r[0], int(c_lo)) if c_lo is not None else r[0],
                    min(r[1], int(c_hi)) if c_hi is not None else r[1])  # fmt: skip
        if op == "QuantizeLinear":
            s = self.scalar(p.input[1])
            zp = self.scalar(p.input[2]) if len(p.input) > 2 and p.input[2] else 0.0
            f_lo, f_hi = self.float_range(p.input[0], depth + 1)
            if s is None or s <= 0 or zp is None or not (math.isfinite(f_lo + f_hi)):
                return lo, hi
            q = [int(np.rint(np.float32(v) / np.float32(s))) + int(zp) for v in (f_lo, f_hi)]
            return max(lo, min(hi, q[0])), max(lo, min(hi, q[1]))
        return lo, hi

    def float_range(self, x: str, depth: int = 0) -> tuple[float, float]:
        v = self.array(x)
        if v is not None and v.size:
            return float(v.min()), float(v.max())
        p = self.producer.get(x)
        if p is None or depth > _MAX_DEPTH:
            return -math.inf, math.inf
        op = p.op_type
        if op in ("Softmax", "Sigmoid"):
            return 0.0, 1.0
        if op in _MOVES:
            return self.float_range(p.input[0], depth + 1)
        if op == "Concat":
            rs = [self.float_range(i, depth + 1) for i in p.input]
            return min(r[0] for r in rs), max(r[1] for r in rs)
        if op == "Relu":
            r = self.float_range(p.input[0], depth + 1)
            return max(r[0], 0.0), max(r[1], 0.0)
        if op == "Clip":
            r = self.float_range(p.input[0], depth + 1)
            c_lo, c_hi = (self.scalar(p.input[i]) if len(p.input) > i and p.input[i] else None
                          for i in (1, 2))  # fmt: skip
            return (max(r[0], c_lo) if c_lo is not None else r[0],
                    min(r[1], c_hi) if c_hi is not None else r[1])  # fmt: skip
        return -math.inf, math.inf


def products_of(model: onnx.ModelProto, base_dir: Path | None = None) -> list[Int8Product]:
    """The integer GEMMs of an already optimized graph (``optimized_graph``)."""
    b = _Bounds(model, base_dir)
    out = []
    for n in model.graph.node:
        if n.op_type not in _GEMMS or n.domain not in ("", "ai.onnx", "com.microsoft"):
            continue
        ia, iza, ib, izb = _GEMMS[n.op_type]
        side = []
        for i, iz in ((ia, iza), (ib, izb)):
            x = n.input[i]
            zp = n.input[iz] if len(n.input) > iz else ""
            elem = b.int_type(x, zp)
            if elem not in _TYPES:
                elem = TensorProto.UINT8 if i == ia else TensorProto.INT8  # the widest guess
            side.append((_TYPES[elem][2], b.int_range(x, elem)))
        (at, ar), (bt, br) = side
        out.append(Int8Product(n.name, n.op_type, at, ar, bt, br))
    return out


def optimized_graph(
    model: onnx.ModelProto | str | Path | bytes,
    out_dir: Path,
    disabled_optimizers: tuple[str, ...] = (),
    external_data_dir: str | Path | None = None,
) -> Path:
    """Write the graph ONNX Runtime's CPU EP would run for ``model`` (x86's Q/DQ rewrites,
    extended level) to ``out_dir``, large initializers in a file beside it; its path."""
    import onnxruntime as ort

    out = Path(out_dir) / "optimized.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3
    so.add_session_config_entry("session.qdqisint8allowed", "0")  # as on x86, everywhere
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", "optimized.data"
    )
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "4096"
    )
    if external_data_dir is not None:
        so.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(external_data_dir)
        )
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    src = model if isinstance(model, bytes) else str(model)
    ort.InferenceSession(src, so, providers=["CPUExecutionProvider"],
                         disabled_optimizers=list(disabled_optimizers))  # fmt: skip
    return out


def int8_products(
    model: onnx.ModelProto | str | Path | bytes,
    disabled_optimizers: tuple[str, ...] = INT8_DISABLED_OPTIMIZERS,
    external_data_dir: str | Path | None = None,
) -> list[Int8Product]:
    """Every integer GEMM ORT's CPU EP runs for ``model`` on an x86 CPU, with its operand
    types and bounds. ``disabled_optimizers``: as the session will have them (sasq's int8
    sessions, ``SessionConfig.for_int8``, disable ``MatMulAddFusion``, which would turn
    int8 linears into float Gemms)."""
    with tempfile.TemporaryDirectory(prefix="sasq-int8-") as tmp:
        path = optimized_graph(model, Path(tmp), disabled_optimizers, external_data_dir)
        return products_of(onnx.load(str(path), load_external_data=False), Path(tmp))


def has_qdq(model: onnx.ModelProto) -> bool:
    """The graph has Q/DQ nodes at all (an FP graph has no int8 product to worry about)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
