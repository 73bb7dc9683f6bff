"""exporter/fp16_pass.py: op and element types after the pass, numerics under ONNX Runtime
against the fp32 graph within bounds derived from fp16 rounding (u = 2^-11 per rounding,
products summed in fp32 or, on a machine with native fp16 kernels, in fp16: the bounds take
the fp16 sum), onnx.checker full_check, and the cases where fp32 must be kept."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from sasq.exporter.fp16_pass import Fp16Config, to_fp16

U = 2.0**-11  # fp16 unit roundoff
IO = Fp16Config(fp32_io=("x", "y"))


def _parse(text: str, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    m = onnx.parser.parse_model(text)
    m.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    onnx.checker.check_model(m, full_check=True)
    return m


def _run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _types(m: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(m).graph
    out = {t.name: t.data_type for t in g.initializer}
    out.update({v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]})
    return out


def _gamma(k: int) -> float:
    return k * U / (1 - k * U)


LINEAR = """
<ir_version: 9, opset_import: ["" : 20]>
lin (float[4, 8, 64] x) => (float[4, 8, 32] y) {
    h = MatMul(x, W)
    y = Add(h, b)
}
"""


def test_linear_in_fp16_within_its_rounding_bound():
    rng = np.random.default_rng(0)
    W, b = (
        rng.standard_normal((64, 32)).astype(np.float32),
        rng.standard_normal(32).astype(np.float32),
    )
    m = _parse(LINEAR, {"W": W, "b": b})
    h, report = to_fp16(m, IO)
    onnx.checker.check_model(h, full_check=True)
    t = _types(h)
    assert t["W"] == t["b"] == TensorProto.FLOAT16  # weights converted in place, names kept
    assert t["x"] == t["y"] == TensorProto.FLOAT  # the I/O asked for stays fp32
    assert [n.op_type for n in h.graph.node] == ["Cast", "MatMul", "Add", "Cast"]
    assert report.kept_fp32 == {} and report.casts == 2
    x = rng.standard_normal((4, 8, 64)).astype(np.float32) * 3
    (y32,), (y16,) = _run(m, {"x": x}), _run(h, {"x": x})
    # inputs and weights rounded (2u + u^2), K products summed (gamma_K), then the MatMul's
    # output, the bias and the sum rounded (u each, on values <= |x||W| + |b|)
    mag = np.abs(x) @ np.abs(W)
    bound = (2 * U + U * U + _gamma(64)) * mag + 3 * U * (mag + np.abs(b))
    err = np.abs(y16.astype(np.float64) - y32)
    assert np.all(err <= bound) and err.max() > 0  # fp16 did happen
    assert err.max() < 0.2 * bound.max()  # and far from the worst case, as rounding is


LAYERNORM = """
<ir_version: 9, opset_import: ["" : 20]>
ln (float[16, 256] x) => (float[16, 256] y) {
    y = LayerNormalization <axis = -1, epsilon = 0.00001> (x, s)
}
"""


def test_layernorm_of_values_whose_squares_overflow_fp16_stays_accurate():
    # |x| up to ~800: x^2 (6.4e5) is past fp16's 65504, so statistics summed in fp16 would be
    # inf; with stash_type=1 they are fp32 (TensorRT's normalization layer computes in the
    # stash type, onnx-tensorrt's LayerNormalization importer)
    rng = np.random.default_rng(1)
    m = _parse(LAYERNORM, {"s": np.ones(256, np.float32)})
    h, _ = to_fp16(m, IO)
    ln = next(n for n in h.graph.node if n.op_type == "LayerNormalization")
    stash = [a.i for a in ln.attribute if a.name == "stash_type"]
    assert stash in ([], [1]) and _types(h)[ln.input[0]] == TensorProto.FLOAT16
    x = (rng.standard_normal((16, 256)) * 200).astype(np.float32)
    (y32,), (y16,) = _run(m, {"x": x}), _run(h, {"x": x})
    assert np.isfinite(y16).all()
    # first order: inputs rounded by u|x| move y_i by <= u max|x| / sigma (2 + |y_i|); the
    # output is rounded once more (u |y|); 1.05 covers the second-order terms
    sigma = x.std(axis=1, keepdims=True)
    r = np.abs(x).max(axis=1, keepdims=True) / sigma
    bound = 1.05 * U * r * (2 + np.abs(y32)) + U * np.abs(y32)
    assert np.all(np.abs(y16.astype(np.float64) - y32) <= bound)


L2NORM = """
<ir_version: 9, opset_import: ["" : 20]>
l2 (float[4, 8, 32] x) => (float[4, 8, 32] y) {
    n = ReduceL2 <keepdims = 1> (x, ax)
    c = Clip(n, eps)
    y = Div(x, c)
}
"""


def test_reduction_and_a_constant_fp16_cannot_hold_stay_fp32():
    m = _parse(L2NORM, {"ax": np.array([-1], np.int64), "eps": np.array(1e-12, np.float32)})
    h, report = to_fp16(m, IO)
    onnx.checker.check_model(h, full_check=True)
    t = _types(h)
    nodes = {n.op_type: n for n in h.graph.node}
    assert t[nodes["ReduceL2"].input[0]] == TensorProto.FLOAT  # fed through a Cast to fp32
    assert t["eps"] == TensorProto.FLOAT and numpy_helper.to_array(
        next(i for i in h.graph.initializer if i.name == "eps")
    ) == np.float32(1e-12)
    assert t[nodes["Div"].input[0]] == t[nodes["Div"].input[1]] == TensorProto.FLOAT16
    assert set(report.kept_fp32.values()) == {
        "ReduceL2: a reduction, accumulated in fp32", "constant 1e-12 rounds to 0 in fp16"
    }  # fmt: skip
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 32)).astype(np.float32)
    x[0, 0] = 0  # the clamp keeps a zero row at 0 (in fp16 the 1e-12 would be 0: 0/0)
    (y32,), (y16,) = _run(m, {"x": x}), _run(h, {"x": x})
    assert np.isfinite(y16).all() and np.all(y16[0, 0] == 0)
    # y = x / |x|: x rounded (u), the norm summed in fp32 from rounded x and rounded to fp16
    # (~2u), the quotient rounded (u)
    assert np.all(np.abs(y16 - y32) <= 4.1 * U * np.abs(y32) + 1e-7)


QDQ = """
<ir_version: 9, opset_import: ["" : 20]>
qdq (float[8, 64] x) => (float[8, 16] y) {
    xq = QuantizeLinear(x, xs, xz)
    xd = DequantizeLinear(xq, xs, xz)
    wd = DequantizeLinear <axis = 1> (wq, ws, wz)
    y = MatMul(xd, wd)
}
"""


def _qdq(ws: np.ndarray, rng) -> onnx.ModelProto:
    return _parse(QDQ, {
        "xs": np.array(4 / 127, np.float32), "xz": np.array(0, np.int8),
        "wq": rng.integers(-127, 128, (64, 16)).astype(np.int8), "ws": ws,
        "wz": np.zeros(16, np.int8),
    })  # fmt: skip


def test_qdq_scales_become_fp16_so_dq_outputs_fp16():
    rng = np.random.default_rng(3)
    ws = rng.uniform(0.5, 1.5, 16).astype(np.float32) / 127
    m = _qdq(ws, rng)
    h, report = to_fp16(m, IO)
    onnx.checker.check_model(h, full_check=True)
    t = _types(h)
    assert t["xs"] == t["ws"] == TensorProto.FLOAT16 and t["wq"] == TensorProto.INT8
    assert report.kept_fp32 == {}
    x = rng.uniform(-4, 4, (8, 64)).astype(np.float32)
    (y32,), (y16,) = _run(m, {"x": x}), _run(h, {"x": x})
    # the same int8 codes unless x/s lands within fp16 rounding of a .5 boundary (then one
    # step, s, off); scales rounded to fp16 (u each), the products summed, the output rounded
    wd = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "wq")) * ws
    step = np.abs(wd).sum(axis=0) * (4 / 127)
    mag = (np.abs(x) + 4 / 127) @ np.abs(wd)
    bound = step + (2 * U + _gamma(64)) * mag + U * np.abs(y32)
    assert np.all(np.abs(y16.astype(np.float64) - y32) <= bound)


def test_a_subnormal_fp16_scale_keeps_its_qdq_fp32():
    rng = np.random.default_rng(4)
    ws = np.full(16, 1e-6, np.float32)  # below fp16's smallest normal, 6.1e-5
    h, report = to_fp16(_qdq(ws, rng), IO)
    onnx.checker.check_model(h, full_check=True)
    assert _types(h)["ws"] == TensorProto.FLOAT
    assert list(report.kept_fp32.values()) == ["Q/DQ scale 1e-06 is subnormal in fp16"]


def test_integer_graph_is_left_alone():
    m = _parse(
        """
        <ir_version: 9, opset_import: ["" : 20]>
        ints (int64[4] a) => (int64[4] y) { y = Add(a, b) }
        """,
        {"b": np.arange(4, dtype=np.int64)},
    )
    h, report = to_fp16(m, IO)
    assert [n.op_type for n in h.graph.node] == ["Add"] and report.casts == 0


@pytest.mark.parametrize("keep", [True, False])
def test_io_not_listed_as_fp32_becomes_fp16(keep):
    m = _parse(LINEAR, {"W": np.ones((64, 32), np.float32), "b": np.ones(32, np.float32)})
    h, report = to_fp16(m, Fp16Config(fp32_io=("x", "y") if keep else ()))
    want = "FLOAT" if keep else "FLOAT16"
    assert report.io == {"x": want, "y": want}
