"""Find the attention blocks of an exported graph: MatMul -> Softmax -> MatMul.

The Q/DQ writer needs both batched matmuls of every attention block (QK^T and AV) exposed,
with the softmax between them; this lists them so exports and tests can assert it.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir


def attention_chains(model: ir.Model | onnx.ModelProto | str | Path) -> list[tuple[str, str, str]]:
    """(QK MatMul, Softmax, AV MatMul) node names, in graph order.

    A chain is a Softmax whose input comes from a MatMul and whose output is the first
    input (the probabilities) of a MatMul.
    """
    if isinstance(model, str | Path):
        model = onnx.load(str(model), load_external_data=False)
    if isinstance(model, onnx.ModelProto):
        model = ir.serde.deserialize_model(model)
    chains = []
    for node in model.graph:
        if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
            continue
        qk = node.inputs[0].producer() if node.inputs[0] is not None else None
        if qk is None or qk.op_type != "MatMul":
            continue
        for user, index in node.outputs[0].uses():
            if user.op_type == "MatMul" and index == 0:
                chains.append((qk.name or "", node.name or "", user.name or ""))
    return chains
