"""Recording quantized ops' inputs under ONNX Runtime: the targets found in a small
attention graph, exposed tensors equal to numpy, and the refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sasq.engines.recorder import ActivationRecorder, expose
from sasq.errors import UserError
from sasq.quant.targets import OpKind, QuantTarget, quantizable_inputs

B, S, D = 2, 4, 8
SCALE = 0.35


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w = {n: rng.normal(0, 0.5, (D, D)).astype(np.float32) for n in ("Wq", "Wk", "Wv", "Wo")}
    w["bo"] = rng.normal(0, 0.1, D).astype(np.float32)
    return w


def _model() -> onnx.ModelProto:
    """x -> q/k/v projections -> (q @ k^T) * scale -> Softmax -> @ v -> Gemm(transB);
    plus x @ x^T, an activation matmul outside attention; one node left unnamed."""
    w = _weights()
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array(SCALE, np.float32), "scale"))
    inits.append(numpy_helper.from_array(np.array([B * S, D], np.int64), "flat"))
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "Wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "Wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kT"], name="k_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kT"], ["s"], name="qk"),
        helper.make_node("Mul", ["s", "scale"], ["s_scaled"], name="scale_mul"),
        helper.make_node("Softmax", ["s_scaled"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"], name="av"),
        helper.make_node("Reshape", ["o", "flat"], ["o_flat"], name="flatten"),
        helper.make_node("Gemm", ["o_flat", "Wo", "bo"], ["y"], name="out_proj", transB=1),
        helper.make_node("Transpose", ["x"], ["xT"], name="x_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xT"], ["gram"]),  # unnamed
    ]
    graph = helper.make_graph(
        nodes,
        "attn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, D])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [B * S, D]),
            helper.make_tensor_value_info("gram", TensorProto.FLOAT, [B, S, S]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def _reference(x: np.ndarray) -> dict[str, np.ndarray]:
    w = _weights()
    q, k, v = x @ w["Wq"], x @ w["Wk"], x @ w["Wv"]
    kT = k.transpose(0, 2, 1)
    s = (q @ kT) * SCALE
    e = np.exp(s - s.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    o_flat = (p @ v).reshape(B * S, D)
    y = o_flat @ w["Wo"].T + w["bo"]
    return {"x": x, "q": q, "kT": kT, "p": p, "v": v, "o_flat": o_flat, "y": y}


def test_quantizable_inputs_lists_every_gemm_with_its_kind():
    targets = quantizable_inputs(_model())
    assert targets == [
        QuantTarget("q_proj", "MatMul", OpKind.LINEAR, ("x",), "Wq", 1),
        QuantTarget("k_proj", "MatMul", OpKind.LINEAR, ("x",), "Wk", 1),
        QuantTarget("v_proj", "MatMul", OpKind.LINEAR, ("x",), "Wv", 1),
        QuantTarget("qk", "MatMul", OpKind.ATTN_QK, ("q", "kT")),
        QuantTarget("av", "MatMul", OpKind.ATTN_AV, ("p", "v")),
        QuantTarget("out_proj", "Gemm", OpKind.LINEAR, ("o_flat",), "Wo", 0),
        QuantTarget("MatMul_11", "MatMul", OpKind.MATMUL, ("x", "xT")),
    ]


def test_exposed_tensors_equal_numpy():
    model = _model()
    names = sorted({a for t in quantizable_inputs(model) for a in t.activations} - {"xT"})
    exposed = expose(model, names)
    onnx.checker.check_model(exposed, full_check=True)
    assert [o.name for o in exposed.graph.output] == ["y", "gram", "kT", "o_flat", "p", "q", "v"]
    assert len(model.graph.output) == 2  # the input model is left alone

    x = np.random.default_rng(1).normal(0, 1, (B, S, D)).astype(np.float32)
    rec = ActivationRecorder(model, [*names, "Wq"])
    outputs, recorded = rec.run({"x": x})
    ref = _reference(x)
    assert set(recorded) == {*names, "Wq"}
    for name in names:
        np.testing.assert_allclose(recorded[name], ref[name], rtol=1e-5, atol=1e-6)
    assert np.array_equal(recorded["Wq"], _weights()["Wq"])  # an initializer, from the model
    np.testing.assert_allclose(outputs[0], ref["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[1], x @ x.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)


def test_expose_refuses_unknown_tensors():
    with pytest.raises(UserError, match="not in the graph: nope"):
        expose(_model(), ["q", "nope"])


def test_exposing_an_existing_output_adds_nothing():
    assert len(expose(_model(), ["y", "x"]).graph.output) == 2
