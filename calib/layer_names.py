"""Model names of a step graph's quantizable ops: ``node_MatMul_231`` -> ``blocks.1.ffn.fc2``.

A report that names the layer a person can find in the model (``blocks.3.attn.mat_qkv``)
beats one naming ONNX nodes or tensors (``node_MatMul_383``, ``add_54``). The names come
from the FP step graph itself, so any export carries them:

- a linear is named by its weight initializer, which the exporter keeps as the parameter's
  name (``var.blocks.1.ffn.fc2.weight.T`` -> ``blocks.1.ffn.fc2``; ``var.head...`` -> ``head``);
- an attention product by the module scope the exporter records in the node's metadata
  (``pkg.torch.onnx.name_scopes``: ``var.blocks.0.attn``) plus ``qk`` or ``av``;
- anything else keeps its node name.
"""

from __future__ import annotations

import ast

import onnx

from sasq.quant.targets import OpKind, QuantTarget, quantizable_inputs

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_ROOT = "var."  # the export wraps the VAR as ``var`` (sasq.exporter.modules.Step)
_SUFFIX = {OpKind.ATTN_QK: "qk", OpKind.ATTN_AV: "av"}


def _strip(name: str) -> str:
    name = name.removeprefix(_ROOT)
    for tail in (".weight.T", ".weight"):
        if name.endswith(tail):
            return name[: -len(tail)]
    return name


def _module_scope(node: onnx.NodeProto) -> str | None:
    """The innermost module path among the node's recorded name scopes, if any."""
    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get(_SCOPES_KEY, "[]"))
    except (ValueError, SyntaxError):
        return None
    modules = [s for s in scopes if isinstance(s, str) and s.startswith(_ROOT)]
    return modules[-1] if modules else None


def layer_name(target: QuantTarget, node: onnx.NodeProto) -> str:
    if target.kind is OpKind.LINEAR and target.weight:
        return _strip(target.weight)
    scope = _module_scope(node)
    if scope and target.kind in _SUFFIX:
        return f"{_strip(scope)}.{_SUFFIX[target.kind]}"
    return target.node


def layer_names(step: onnx.ModelProto) -> dict[str, str]:
    """Node name -> model name for every quantizable op of an FP step graph, graph order.
    Names stay unique: a clash (two ops under one scope) keeps the node name as a suffix."""
    nodes = {n.name: n for n in step.graph.node}
    out: dict[str, str] = {}
    taken: set[str] = set()
    for t in quantizable_inputs(step):
        name = layer_name(t, nodes[t.node]) if t.node in nodes else t.node
        if name in taken:
            name = f"{name}[{t.node}]"
        taken.add(name)
        out[t.node] = name
    return out
