"""The element type of every tensor of a graph, by ONNX shape inference on a copy without the
weights' bytes (a VAR-d16 step holds 1.2 GB; inference needs only small constants)."""

from __future__ import annotations

import onnx

_KEEP_BYTES = 1024  # small constants keep their values (Reshape targets, axes)


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with large initializers reduced to name, type and dims."""
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    g, src = light.graph, model.graph
    g.name = src.name
    for part in ("node", "input", "output"):
        getattr(g, part).extend(getattr(src, part))
    for t in src.initializer:
        if t.ByteSize() <= _KEEP_BYTES:
            g.initializer.append(t)
        else:
            g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    return light


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX element type, for every tensor inference can type."""
    inferred = onnx.shape_inference.infer_shapes(weightless(model), strict_mode=False)
    g = inferred.graph
    out = {t.name: t.data_type for t in g.initializer}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type:
            out[vi.name] = vi.type.tensor_type.elem_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t.data_type
    return out
