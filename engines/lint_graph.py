"""The lint's index of one graph: producers, consumers, constants (small ones read, external
data only from inside the model's folder), static shapes and element types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from sasq.engines.trt_ops import ops_set

# Ops TensorRT moves Q/DQ across: a DQ seen through them still feeds the GEMM in int8.
MOVES = ops_set("Identity Reshape Transpose Squeeze Unsqueeze Flatten Expand Slice Gather")


class LintGraph:
    """Index of one graph: producers, consumers, constants, static shapes."""

    def __init__(self, model: onnx.ModelProto, base_dir: Path | None):
        g = model.graph
        self.base_dir = base_dir
        self.nodes = list(g.node)
        self.names = {id(n): n.name or f"{n.op_type}#{i}" for i, n in enumerate(self.nodes)}
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for n in self.nodes:
            for i, x in enumerate(n.input):
                self.consumers.setdefault(x, []).append((n, i))
        inputs = {i.name for i in g.input}
        self.init = {t.name: t for t in g.initializer if t.name not in inputs}  # overridable: not
        self.shapes: dict[str, list[int | None]] = {}
        self.types: dict[str, int] = {}
        for vi in [*g.input, *g.output, *g.value_info]:
            t = vi.type.tensor_type
            self.types[vi.name] = t.elem_type
            if t.HasField("shape"):
                dims = t.shape.dim
                self.shapes[vi.name] = [
                    d.dim_value if d.HasField("dim_value") else None for d in dims
                ]
        for t in self.init.values():
            self.types[t.name], self.shapes[t.name] = t.data_type, list(t.dims)

    def name(self, node: onnx.NodeProto) -> str:
        return self.names[id(node)]

    def source(self, x: str) -> str:
        """x with Identity producers looked through."""
        while (p := self.producer.get(x)) is not None and p.op_type == "Identity":
            x = p.input[0]
        return x

    def const_tensor(self, x: str) -> TensorProto | None:
        x = self.source(x)
        if x in self.init:
            return self.init[x]
        p = self.producer.get(x)
        if p is None or p.op_type != "Constant":
            return None
        for a in p.attribute:
            if a.name == "value":
                return a.t
            if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                return numpy_helper.from_array(np.asarray(onnx.helper.get_attribute_value(a)))
        return None

    def value(self, x: str) -> np.ndarray | None:
        """A constant's values (small tensors only: scales, zero points); None if not known."""
        t = self.const_tensor(x)
        if t is None:
            return None
        if t.data_location == TensorProto.EXTERNAL:
            if self.base_dir is None:
                return None
            t = TensorProto.FromString(t.SerializeToString())
            onnx.external_data_helper.load_external_data_for_tensor(t, str(self.base_dir))
        return numpy_helper.to_array(t)

    def dtype(self, x: str) -> int | None:
        t = self.const_tensor(x)
        return t.data_type if t is not None else self.types.get(self.source(x))

    def shape(self, x: str) -> list[int | None] | None:
        t = self.const_tensor(x)
        return list(t.dims) if t is not None else self.shapes.get(self.source(x))

    def is_weight(self, n: onnx.NodeProto) -> bool:
        """A Q of a constant, or a DQ of a constant or of such a Q (fake-quantized weights)."""
        x = self.source(n.input[0])
        p = self.producer.get(x)
        if n.op_type == "DequantizeLinear" and p is not None and p.op_type == "QuantizeLinear":
            x = p.input[0]
        return self.const_tensor(x) is not None

    def quantized(self, x: str, depth: int = 0) -> bool:
        """x is a DQ output, seen through ops TensorRT moves Q/DQ across."""
        p = self.producer.get(x)
        if p is None or depth > 16:
            return False
        if p.op_type == "DequantizeLinear":
            return True
        if p.op_type == "Concat":
            return all(self.quantized(i, depth + 1) for i in p.input)
        return p.op_type in MOVES and self.quantized(p.input[0], depth + 1)
