"""The lint's check of a graph against TensorRT's ONNX parser table (``trt_ops``): every op
the parser must know, every data type it must take, the opset range it parses.

What is checked, and why this way:
- op: listed and "Y" in the table of the chosen TensorRT version (a custom domain never is,
  unless the caller lists it in ``extra_ops``, e.g. a plugin);
- dtype: the element type of a node's data input (input 0; the output for a node without
  inputs, e.g. Constant), which is what the table's "Supported Types" column describes
  (QuantizeLinear: the float it quantizes; DequantizeLinear: the quantized type it reads);
  Concat and Sum look at every input. Types shape inference could not tell are skipped;
- graph inputs and outputs: a type the parser takes at all (the table's header list);
- opset: inside the table's range.

Yields ``(rule, node, message)`` with ``rule`` one of "opset", "unsupported-op",
"unsupported-dtype"; ``engines.lint`` turns them into its violations.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import TensorProto

from sasq.engines.trt_ops import SupportTable, trt_type_name

Finding = tuple[str, str, str]
_ALL_INPUTS = frozenset({"Concat", "Sum", "Max", "Min", "Mean"})  # variadic: every input


def _types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    out: dict[str, int] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type:
            out[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        out[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t.data_type
    return out


def _data_types(n: onnx.NodeProto, types: dict[str, int]) -> list[int]:
    names = list(n.input) if n.op_type in _ALL_INPUTS else list(n.input[:1])
    if not names or names == [""]:
        names = list(n.output[:1])
    return sorted({types[x] for x in names if x in types})


def _check_nodes(
    graph: onnx.GraphProto, types: dict[str, int], table: SupportTable, extra: frozenset[str]
) -> Iterator[Finding]:
    label = table.label()
    for i, n in enumerate(graph.node):
        name = n.name or f"{n.op_type}#{i}"
        default = n.domain in ("", "ai.onnx")
        op = n.op_type if default else f"{n.domain}::{n.op_type}"
        if op in extra:
            continue
        if not default:
            yield "unsupported-op", name, f"{op}: custom domain"
            continue
        support = table.ops.get(op)
        if support is None or not support.supported:
            why = "not in" if support is None else "marked unsupported in"
            yield "unsupported-op", name, f"{op}: {why} {label}'s ONNX parser table"
            continue
        for t in _data_types(n, types):
            dtype = trt_type_name(t)
            if not table.accepts(op, dtype):
                listed = ", ".join(sorted(support.types)) or "none listed"
                msg = f"{op} on {dtype}: {label}'s parser table lists {listed}"
                yield "unsupported-dtype", name, msg
        for a in n.attribute:  # If / Loop / Scan bodies: ops only (their types are local)
            for sub in [a.g, *a.graphs] if a.type in (a.GRAPH, a.GRAPHS) else []:
                yield from _check_nodes(sub, {}, table, extra)


def _check_io(model: onnx.ModelProto, table: SupportTable) -> Iterator[Finding]:
    for vi in [*model.graph.input, *model.graph.output]:
        t = vi.type.tensor_type.elem_type
        if t and trt_type_name(t) not in table.data_types:
            msg = f"graph I/O of type {TensorProto.DataType.Name(t)}: not a data type " \
                  f"{table.label()}'s parser takes"  # fmt: skip
            yield "unsupported-dtype", vi.name, msg


def check_support(
    model: onnx.ModelProto, table: SupportTable, extra_ops: frozenset[str] = frozenset()
) -> Iterator[Finding]:
    """Every op, dtype and the opset of ``model`` (shapes inferred) against ``table``."""
    ver = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if ver is not None and not table.opset_min <= ver <= table.opset_max:
        rng = f"{table.opset_min}..{table.opset_max}"
        yield "opset", "<model>", f"default-domain opset {ver} outside {table.label()}'s {rng}"
    yield from _check_nodes(model.graph, _types(model), table, extra_ops)
    yield from _check_io(model, table)
