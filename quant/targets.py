"""The ops sasq quantizes in an ONNX graph, and the inputs of each.

Q/DQ goes on both inputs of every GEMM, the attention batched matmuls included (README,
"A tour of the CLI", ``quantize``). ``quantizable_inputs`` lists those ops from the graph:
what calibration observes and what the Q/DQ writer quantizes, so both read this one list.
(Recording the tensors under ONNX Runtime is ``sasq.engines.recorder``'s job.)

An op's kind follows from its inputs: a MatMul/Gemm with a constant (initializer or
Constant node) input is ``linear`` and that input is its weight; with two activation inputs
it is ``attn_qk`` when its output reaches a Softmax, ``attn_av`` when its first input comes
from one (through reshapes, casts, masks or Q/DQ), and ``matmul`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import onnx

_GEMMS = ("MatMul", "Gemm")
# Ops that may sit between an attention matmul and its Softmax without changing the role.
_BEFORE_SOFTMAX = {"Add", "Mul", "Div", "Sub", "Where", "Cast", "Reshape", "Identity"}
_AFTER_SOFTMAX = {"Cast", "Reshape", "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear"}
_MAX_HOPS = 4


class OpKind(str, Enum):
    LINEAR = "linear"  # activation x constant weight
    ATTN_QK = "attn_qk"  # q @ k^T: feeds a Softmax
    ATTN_AV = "attn_av"  # softmax(...) @ v
    MATMUL = "matmul"  # activation x activation outside an attention block


@dataclass(frozen=True)
class QuantTarget:
    """One quantizable op. ``activations``: its non-constant inputs among A and B, in input
    order (Gemm's bias C is never quantized). ``weight_axis``: the output-channel axis of
    the weight for per-channel scales (1 for MatMul's [K, N], 0 for Gemm with transB)."""

    node: str
    op_type: str
    kind: OpKind
    activations: tuple[str, ...]
    weight: str | None = None
    weight_axis: int | None = None


def _constants(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    names.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    return names


def _node_name(node: onnx.NodeProto, i: int) -> str:
    return node.name or f"{node.op_type}_{i}"


def _weight_axis(node: onnx.NodeProto, weight_index: int, rank: int | None) -> int:
    if node.op_type == "Gemm":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        trans = attrs.get("transB", 0) if weight_index == 1 else attrs.get("transA", 0)
        # B [K, N] -> N is axis 1 (0 if transposed); A [M, K] -> M is axis 0 (1 if transposed)
        return (0 if trans else 1) if weight_index == 1 else (1 if trans else 0)
    if weight_index == 1:
        return (rank or 2) - 1  # [.., K, N]: the last axis
    return (rank or 2) - 2  # W @ x: rows of W [.., M, K] are the output channels


def quantizable_inputs(model: onnx.ModelProto) -> list[QuantTarget]:
    """Every MatMul/Gemm of the main graph with at least one activation input, graph order."""
    graph = model.graph
    consts = _constants(graph)
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def reaches_softmax(name: str) -> bool:
        for _ in range(_MAX_HOPS):
            users = consumers.get(name, [])
            if len(users) != 1:
                return False
            if users[0].op_type == "Softmax":
                return True
            if users[0].op_type not in _BEFORE_SOFTMAX:
                return False
            name = users[0].output[0]
        return False

    def from_softmax(name: str) -> bool:
        for _ in range(_MAX_HOPS):
            node = producer.get(name)
            if node is None:
                return False
            if node.op_type == "Softmax":
                return True
            if node.op_type not in _AFTER_SOFTMAX:
                return False
            name = node.input[0]
        return False

    targets = []
    for i, node in enumerate(graph.node):
        if node.op_type not in _GEMMS or node.domain not in ("", "ai.onnx"):
            continue
        ab = list(node.input[:2])
        acts = tuple(x for x in ab if x not in consts)
        if not acts:
            continue  # constant x constant: folding's job, not ours
        if len(acts) == 1:
            w_index = 1 - ab.index(acts[0])
            w = ab[w_index]
            axis = _weight_axis(node, w_index, ranks.get(w))
            kind, weight = OpKind.LINEAR, w
        else:
            axis, weight = None, None
            if from_softmax(ab[0]):
                kind = OpKind.ATTN_AV
            elif reaches_softmax(node.output[0]):
                kind = OpKind.ATTN_QK
            else:
                kind = OpKind.MATMUL
        targets.append(QuantTarget(_node_name(node, i), node.op_type, kind, acts, weight, axis))
    return targets
