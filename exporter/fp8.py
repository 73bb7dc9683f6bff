"""int8 Q/DQ step graph (tensorrt target) -> the same graph in FP8 E4M3 (FLOAT8E4M3FN).

``sasq quantize --precision fp8``: what TensorRT users on Hopper/Ada pick. Same calibration,
same places for Q/DQ (linears, both attention products, the KV cache); only the type and
the scales change (TensorRT's FP8 is E4M3, largest finite 448; Q rounds and saturates):
- activations per tensor: s = amax / 448 (the int8 graph's amax / 127, rescaled);
- weights per output channel: s_c = amax_c / 448 from the *float* weights (an int8 weight
  re-quantized would carry int8's rounding into fp8);
- probabilities: 1 / 448 (p in [0, 1]; E4M3 keeps 4 significant bits down to 2^-6 of it);
- the KV cache is stored as fp8 between steps (graph I/O FLOAT8E4M3FN). Its append is
  written DQ -> Concat (float) -> Q: ONNX's Concat takes no float8 type (opset 13..21), and
  TensorRT's Concatenation layer lists int8 but not fp8. Re-quantizing the stored tokens is
  exact: q(dq(x)) = x for every E4M3 value x (the product x * s is within fp32 rounding of
  a value whose division by s lands on x again, far inside half an E4M3 step); the new
  tokens are quantized once, there, from their float value.

Shift-and-sum on the fp8 grid (the int8 graph's copies, ``shift_sum_cache``): the int8
shifts d_c = (2c+1-n) s / (2n) are fractions of a uniform step s. E4M3's step is uniform
only within a binade: ulp(v) = s8 * 2^(max(floor(log2 |v| / s8), -6) - 3). Within v's
binade the same argument holds with s -> ulp(v), so the copies are shifted by
d_c(v) = (2c+1-n) ulp(v) / (2n), computed in the graph from v (Abs, Div, Max, Log, Floor,
Pow), and their mean has error <= ulp(v) / (2n) (copies that cross into the next binade,
whose step is twice as large, lose part of the gain). The probability shifts of the int8
graph (``prob_shift``: Hermite's identity on a uniform grid) are dropped: p / n with n a
power of 2 is exact in floating point, so the copies' fp8 probabilities already carry the
same bits as p's (inside E4M3's normal range).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from sasq.errors import UserError

E4M3_MAX = 448.0
E4M3_MIN_EXP = -6  # smallest normal exponent; subnormal step 2^-9
F8, I8, F32 = ir.DataType.FLOAT8E4M3FN, ir.DataType.INT8, ir.DataType.FLOAT
_VSHIFT, _PSHIFT = "_ss_vshift", "_ss_pshift"  # shift_sum_cache.CopyBranch's node names
_F8_READERS = ("DequantizeLinear",)  # the one op that may read an fp8 tensor


@dataclass
class Fp8Report:
    """weights: DQs re-quantized from float; scales: activation/cache scales rescaled;
    cache: graph I/O now FLOAT8E4M3FN; appends: Concats rewritten DQ -> Concat -> Q;
    value_shifts / prob_shifts_dropped: shift-and-sum blocks adapted."""

    weights: int = 0
    scales: int = 0
    cache: list[str] = field(default_factory=list)
    appends: int = 0
    value_shifts: int = 0
    prob_shifts_dropped: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _const(v: ir.Value | None) -> np.ndarray | None:
    return None if v is None or v.const_value is None else v.const_value.numpy()


def quantize_e4m3(W: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (along ``axis``) E4M3 codes and scales amax_c / 448 of float ``W``."""
    other = tuple(i for i in range(W.ndim) if i != axis % W.ndim)
    amax = np.abs(W).max(axis=other).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(E4M3_MAX), np.float32(1.0)).astype(np.float32)
    shape = [1] * W.ndim
    shape[axis % W.ndim] = -1
    q = np.clip(W / scale.reshape(shape), -E4M3_MAX, E4M3_MAX).astype(ml_dtypes.float8_e4m3fn)
    return q, scale


class _Fp8:
    def __init__(self, model: ir.Model, weights: Mapping[str, np.ndarray], qmax: int):
        self.g, self.weights, self.ratio = model.graph, weights, np.float32(qmax / E4M3_MAX)
        self.report = Fp8Report()
        self._scales: dict[int, ir.Value] = {}  # int8 scale value -> its fp8 rescaled twin
        self._zero: ir.Value | None = None
        self._n = 0

    def const(self, base: str, arr: np.ndarray) -> ir.Value:
        self._n += 1
        name = f"{base}_fp8c{self._n}"
        v = ir.Value(name=name, shape=ir.Shape(arr.shape), type=ir.TensorType(
            ir.DataType.from_numpy(arr.dtype)), const_value=ir.tensor(arr, name=name))  # fmt: skip
        self.g.register_initializer(v)
        return v

    def node(self, op: str, inputs: list, before: ir.Node, **attrs) -> ir.Value:
        self._n += 1
        n = ir.node(op, inputs, attrs or None, name=f"{before.name}_fp8_{op}{self._n}")
        self.g.insert_before(before, n)
        return n.outputs[0]

    def zero(self) -> ir.Value:
        if self._zero is None:
            self._zero = self.const("fp8_zero", np.zeros((), ml_dtypes.float8_e4m3fn))
        return self._zero

    def scale(self, v: ir.Value) -> ir.Value:
        """The fp8 scale of an activation/cache Q/DQ: the int8 scale * qmax / 448."""
        if id(v) not in self._scales:
            s = _const(v)
            if s is None or s.size != 1:
                raise UserError(f"fp8: Q/DQ scale {v.name} is not a per-tensor constant")
            self._scales[id(v)] = self.const(v.name or "scale", (s * self.ratio).astype(s.dtype))
            self.report.scales += 1
        return self._scales[id(v)]

    # --- shift-and-sum ------------------------------------------------------------------

    def value_shift(self, add: ir.Node) -> None:
        """v + d  ->  v + (d / s_int8) * ulp_e4m3(v): the copies' shifts in v's binade."""
        q = next((u.node for u in add.outputs[0].uses() if u.node.op_type == "QuantizeLinear"),
                 None)  # fmt: skip
        s = _const(q.inputs[1]) if q is not None else None
        if s is None:
            raise UserError(f"fp8: {add.name} does not feed a constant-scale QuantizeLinear")
        v, shift = add.inputs[0], add.inputs[1]
        s8 = float(s.reshape(-1)[0]) * float(self.ratio)
        c = {k: self.const(f"{add.name}_{k}", np.array(x, np.float32)) for k, x in (
            ("s8", s8), ("inv_s", 1.0 / float(s.reshape(-1)[0])), ("lo", 2.0**E4M3_MIN_EXP),
            ("inv_ln2", 1.0 / math.log(2.0)), ("three", 3.0), ("two", 2.0))}  # fmt: skip
        r = self.node("Div", [self.node("Abs", [v], add), c["s8"]], add)
        r = self.node("Max", [r, c["lo"]], add)
        e = self.node("Floor", [self.node("Mul", [self.node("Log", [r], add), c["inv_ln2"]], add)],
                      add)  # fmt: skip
        ulp = self.node("Mul", [c["s8"], self.node("Pow", [c["two"], self.node(
            "Sub", [e, c["three"]], add)], add)], add)  # fmt: skip
        frac = self.node("Mul", [shift, c["inv_s"]], add)  # (2c+1-n)/(2n)
        add.replace_input_with(1, self.node("Mul", [frac, ulp], add))
        self.report.value_shifts += 1

    def drop_prob_shift(self, add: ir.Node) -> None:
        add.outputs[0].replace_all_uses_with(add.inputs[0])
        self.report.prob_shifts_dropped += 1

    def shape_of_float(self, n: ir.Node) -> None:
        """Shape of an fp8 tensor -> of its float twin: ONNX Runtime's CPU EP has no Shape
        kernel for float8, and the dims are the same."""
        twin = _float_twin(n.inputs[0])
        if twin is None:
            raise UserError(f"fp8: {n.name} reads the shape of {n.inputs[0].name}, no float twin")
        n.replace_input_with(0, twin)

    # --- Q/DQ and the cache -------------------------------------------------------------

    def weight(self, dq: ir.Node) -> None:
        w8 = dq.inputs[0]
        name = (w8.name or "").removesuffix("_int8")
        if name not in self.weights:
            raise UserError(f"fp8: no float weight {name!r} in the FP graph to quantize")
        axis = dq.attributes["axis"].value if "axis" in dq.attributes else 1
        q, s = quantize_e4m3(self.weights[name], axis)
        dq.replace_input_with(0, self.const(name, q))
        dq.replace_input_with(1, self.const(f"{name}_scale", s))
        dq.replace_input_with(2, self.const(f"{name}_zp", np.zeros(s.shape, q.dtype)))
        self.report.weights += 1

    def qdq(self, n: ir.Node) -> None:
        n.replace_input_with(1, self.scale(n.inputs[1]))
        n.replace_input_with(2, self.zero())
        if n.op_type == "QuantizeLinear":
            n.outputs[0].dtype = F8

    def append(self, cat: ir.Node) -> None:
        """Concat of fp8 tensors -> DQ each (or take a new token's float before its Q),
        Concat in float, Q: one scale for the whole cache."""
        qs = [x.producer() for x in cat.inputs]
        ref = next((p for p in qs if p is not None and p.op_type == "QuantizeLinear"), None)
        if ref is None:  # e.g. the fused AV's [cache; copies]: its reader's DQ has the scale
            ref = next((u.node for u in cat.outputs[0].uses()
                        if u.node.op_type == "DequantizeLinear"), None)  # fmt: skip
        if ref is None:
            raise UserError(f"fp8: no scale for the fp8 Concat {cat.name}")
        s, zp = ref.inputs[1], ref.inputs[2]
        for i, (x, p) in enumerate(zip(list(cat.inputs), qs, strict=True)):
            direct = p is not None and p.op_type == "QuantizeLinear" and p.inputs[1] is s
            direct = direct and len(x.uses()) == 1
            cat.replace_input_with(i, p.inputs[0] if direct else self.node(
                "DequantizeLinear", [x, s, zp], cat))  # fmt: skip
        out = cat.outputs[0]
        q = ir.node("QuantizeLinear", [out, s, zp], name=f"{cat.name}_fp8_store")
        self.g.insert_after(cat, q)
        q.outputs[0].dtype, q.outputs[0].shape = F8, out.shape
        is_output = any(o is out for o in self.g.outputs)
        name = out.name
        out.replace_all_uses_with(q.outputs[0], replace_graph_outputs=True)
        q.replace_input_with(0, out)  # undo the replacement of q's own input
        out.dtype = F32
        if is_output:  # the cache output keeps its name: present_key_i ...
            out.name, q.outputs[0].name = f"{name}_float", name
        self.report.appends += 1


def _float_twin(v: ir.Value) -> ir.Value | None:
    """A float tensor of fp8 ``v``'s shape: what its Q quantized, or a DQ reading it."""
    p = v.producer()
    if p is not None and p.op_type == "QuantizeLinear":
        return p.inputs[0]
    return next((u.node.outputs[0] for u in v.uses() if u.node.op_type == "DequantizeLinear"),
                None)  # fmt: skip


def to_fp8(
    model: onnx.ModelProto, weights: Mapping[str, np.ndarray], qmax: int = 127
) -> tuple[onnx.ModelProto, Fp8Report]:
    """The FP8 copy of the int8 step ``model`` (8-bit activations: ``qmax`` 127); ``weights``
    are the FP graph's float initializers by name (the int8 ones are ``<name>_int8``)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 19:  # QuantizeLinear / DequantizeLinear take float8 from opset 19
        raise UserError(f"fp8 Q/DQ needs opset 19 or later; the graph is opset {opset} "
                        "(export with `opset` 19..23)", param="opset")  # fmt: skip
    m = ir.from_proto(model)
    f = _Fp8(m, weights, qmax)
    g = m.graph
    for n in list(g):  # shift-and-sum first: its shifts read the int8 scales
        if n.op_type == "Add" and (n.name or "").endswith(_VSHIFT):
            f.value_shift(n)
        elif n.op_type == "Add" and (n.name or "").endswith(_PSHIFT):
            f.drop_prob_shift(n)
    for v in [*g.inputs, *g.outputs]:
        if v.dtype == I8:
            v.dtype = F8
            f.report.cache.append(v.name)
    for n in list(g):
        if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None:
            f.weight(n)
        elif n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            f.qdq(n)
    for n in list(g):
        if n.op_type == "Concat" and any(x.dtype in (F8, I8) for x in n.inputs):
            f.append(n)
    for n in list(g):
        if n.op_type == "Shape" and n.inputs[0].dtype == F8:
            f.shape_of_float(n)
    RemoveUnusedNodesPass()(m)
    g.sort()
    for n in g:
        bad = [x for x in n.inputs if x is not None and x.dtype in (F8, I8)]
        if bad and n.op_type not in (*_F8_READERS, "QuantizeLinear"):
            raise UserError(f"fp8: {n.op_type} {n.name} reads the 8-bit tensor {bad[0].name}")
    out = ir.to_proto(m)
    del out.graph.value_info[:]  # stale for the retyped tensors; consumers infer again
    return out, f.report
