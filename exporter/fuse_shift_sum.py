"""Sum_i DQ(Q(a_i)) @ DQ(Q(b_i)) -> DQ(Q(Concat_i a_i)) @ DQ(Q(Concat_i b_i)): one int8 GEMM.

(An operand that is an int8 tensor read by a DQ with no Q before it, the int8 KV cache's
values and their shift-and-sum copies, concatenates in int8: DQ(Concat_i b_i).)

The fusion pass of shift-and-sum attention (math: ``shift_sum.py``): the expanded AV
branches (one per copy rank, each with its own Q/DQ and MatMul, added by a Sum) become one
MatMul whose contraction axis is the concatenation of the branches' key columns (K = S +
extra copies): probability columns along the last axis, shifted value rows along the second
to last. Exact up to float summation order, because every branch shares the same scales.

Preconditions (a failed match says which): a Sum of >= 2 inputs, each the only use of a
MatMul; both inputs of every MatMul are DQ(Q(x)), optionally with a Clip between Q and DQ
(simulated narrow widths); scales, zero points and clip bounds are constants equal across
the branches; the branch operands have rank >= 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass


class NoMatch(Exception):  # noqa: N818 -- a failed match, with its reason
    """Why a Sum was left alone."""


@dataclass
class _QDQ:
    """A GEMM operand DQ(Q(x)), or DQ(x) of an int8 tensor ``x`` stored as is (``q`` None:
    the int8 KV cache, whose branches concatenate before their one DQ)."""

    x: ir.Value
    q: ir.Node | None
    clip: ir.Node | None
    dq: ir.Node

    def params(self) -> list[np.ndarray]:
        if self.q is None:
            vals = list(self.dq.inputs[1:])
        else:
            vals = [*self.q.inputs[1:], *(self.clip.inputs[1:] if self.clip else [])]
        out = []
        for v in vals:
            t = ir.convenience.get_const_tensor(v) if v is not None else None
            if t is None:
                raise NoMatch("scale, zero point or clip bound is not a constant")
            out.append(t.numpy())
        return out


def _qdq(v: ir.Value | None) -> _QDQ:
    dq = v.producer() if v is not None else None
    if dq is None or dq.op_type != "DequantizeLinear":
        raise NoMatch("MatMul input is not a DequantizeLinear output")
    src = dq.inputs[0].producer() if dq.inputs[0] is not None else None
    clip = None
    if src is not None and src.op_type == "Clip":
        clip, src = src, src.inputs[0].producer()
    if clip is None and (src is None or src.op_type != "QuantizeLinear"):
        return _QDQ(dq.inputs[0], None, None, dq)  # an int8 tensor read as is
    if src is None or src.op_type != "QuantizeLinear":
        raise NoMatch("DequantizeLinear is not fed by a QuantizeLinear")
    return _QDQ(src.inputs[0], src, clip, dq)


def _same(a: _QDQ, b: _QDQ) -> bool:
    if (a.q is None) != (b.q is None):
        return False
    pa, pb = a.params(), b.params()
    return len(pa) == len(pb) and all(
        x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)
        for x, y in zip(pa, pb, strict=True)
    )


def match(sum_node: ir.Node) -> list[tuple[_QDQ, _QDQ]]:
    """The (probabilities, values) Q/DQ of each branch, or ``NoMatch`` with the reason."""
    if sum_node.op_type != "Sum" or len(sum_node.inputs) < 2:
        raise NoMatch("not a Sum of two or more inputs")
    branches = []
    for v in sum_node.inputs:
        mm = v.producer() if v is not None else None
        if mm is None or mm.op_type != "MatMul":
            raise NoMatch("a Sum input is not a MatMul output")
        if len(v.uses()) != 1 or v.is_graph_output():
            raise NoMatch(f"{mm.name} is used elsewhere")
        a, b = _qdq(mm.inputs[0]), _qdq(mm.inputs[1])
        for x in (a.x, b.x):
            if x.shape is not None and len(x.shape) < 2:
                raise NoMatch("branch operand of rank < 2")
        branches.append((a, b))
    a0, b0 = branches[0]
    if not all(_same(a, a0) and _same(b, b0) for a, b in branches[1:]):
        raise NoMatch("branches have different scales, zero points or clip bounds")
    return branches


def _requantize(src: _QDQ, x: ir.Value, name: str) -> list[ir.Node]:
    """Q/DQ (or, for stored int8 operands, only the DQ) of the concatenated operand."""
    if src.q is None:
        attrs = src.dq.attributes
        return [ir.node("DequantizeLinear", [x, *src.dq.inputs[1:]], attrs, name=f"{name}_DQ")]
    q = ir.node("QuantizeLinear", [x, *src.q.inputs[1:]], src.q.attributes, name=f"{name}_Q")
    nodes, y = [q], q.outputs[0]
    if src.clip is not None:
        nodes.append(ir.node("Clip", [y, *src.clip.inputs[1:]], name=f"{name}_clip"))
        y = nodes[-1].outputs[0]
    attrs = src.dq.attributes
    nodes.append(ir.node("DequantizeLinear", [y, *src.dq.inputs[1:]], attrs, name=f"{name}_DQ"))
    return nodes


def _fuse(graph: ir.Graph, sum_node: ir.Node, branches) -> None:
    name = sum_node.name or "shift_sum"
    cat_p = ir.node("Concat", [a.x for a, _ in branches], {"axis": -1}, name=f"{name}_cat_p")
    cat_v = ir.node("Concat", [b.x for _, b in branches], {"axis": -2}, name=f"{name}_cat_v")
    qp = _requantize(branches[0][0], cat_p.outputs[0], f"{name}_p")
    qv = _requantize(branches[0][1], cat_v.outputs[0], f"{name}_v")
    mm = ir.node("MatMul", [qp[-1].outputs[0], qv[-1].outputs[0]], name=f"{name}_fused")
    new = [cat_p, cat_v, *qp, *qv, mm]
    ir.convenience.replace_nodes_and_values(
        graph, sum_node, [sum_node], new, [sum_node.outputs[0]], [mm.outputs[0]]
    )


class FuseShiftSumPass(ir.passes.InPlacePass):
    """Fuse every matching Sum of Q/DQ MatMuls; ``reasons`` keeps why others did not."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: dict[str, str] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(model.graph):
            if node.op_type != "Sum":
                continue
            try:
                branches = match(node)
            except NoMatch as e:
                self.reasons[node.name or "Sum"] = str(e)
                continue
            _fuse(model.graph, node, branches)
            modified = True
        if modified:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified)


def fuse_shift_sum(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fused copy of ``model`` (unchanged where nothing matches)."""
    m = ir.serde.deserialize_model(model)
    FuseShiftSumPass()(m)
    return ir.serde.serialize_model(m)
