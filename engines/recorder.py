"""Record intermediate tensors of an ONNX graph under ONNX Runtime.

ORT returns only graph outputs, so ``expose`` turns the named intermediate tensors into
graph outputs, and ``ActivationRecorder`` runs the exposed graph and hands back the model's
own outputs and the recorded tensors separately. Calibration records the inputs of the
ops ``sasq.quant.targets`` lists; the ORT backend records any tensor a caller asks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from sasq.errors import UserError


def expose(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` with the named intermediate tensors added as graph outputs, typed
    from shape inference so ONNX Runtime accepts them. Graph inputs, initializers and
    existing outputs are left alone (the caller has them already); an unknown name is a
    ``UserError``."""
    graph = model.graph
    known_outputs = {o.name for o in graph.output}
    passthrough = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    produced = {o for n in graph.node for o in n.output}
    unknown = [n for n in names if n not in produced and n not in passthrough]
    if unknown:
        raise UserError(f"tensors not in the graph: {', '.join(unknown[:5])}")
    wanted = [n for n in dict.fromkeys(names) if n in produced and n not in known_outputs]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    typed = {v.name: v for v in out.graph.value_info}
    if any(n not in typed for n in wanted):
        inferred = onnx.shape_inference.infer_shapes(out)
        typed.update({v.name: v for v in inferred.graph.value_info})
    untyped = [n for n in wanted if n not in typed or not typed[n].type.tensor_type.elem_type]
    if untyped:
        raise UserError(f"cannot infer the type of: {', '.join(untyped[:5])}")
    for n in wanted:
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(typed[n])
        out.graph.output.append(vi)
    return out


class ActivationRecorder:
    """An ORT session on ``expose(model, names)``. ``run(feeds)`` returns the model's own
    outputs (in graph order) and a dict of the recorded tensors; graph inputs and
    initializers among the names come from the feeds and the model."""

    def __init__(
        self,
        model: onnx.ModelProto,
        names: Iterable[str],
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ):
        import onnxruntime as ort

        self.names = list(dict.fromkeys(names))
        self.outputs = [o.name for o in model.graph.output]
        self._constants = {
            t.name: numpy_helper.to_array(t)
            for t in model.graph.initializer
            if t.name in self.names
        }
        exposed = expose(model, self.names)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.session = ort.InferenceSession(
            exposed.SerializeToString(), so, providers=list(providers)
        )
        fetched = {o.name for o in self.session.get_outputs()}
        extra = [n for n in self.names if n in fetched and n not in self.outputs]
        self._fetch = self.outputs + extra

    def run(self, feeds: Mapping[str, np.ndarray]) -> tuple[list[np.ndarray], dict]:
        values = self.session.run(self._fetch, dict(feeds))
        by_name = dict(zip(self._fetch, values, strict=True))
        known = {**self._constants, **feeds, **by_name}
        recorded = {n: known[n] for n in self.names}
        return [by_name[o] for o in self.outputs], recorded
