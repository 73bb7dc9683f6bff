"""exporter/fp8.py: int8 Q/DQ graphs -> FP8 E4M3, checked against the arithmetic of E4M3
(3 mantissa bits: a normal value is off by at most 2^-4 of itself after rounding, a
subnormal by 2^-10 of the scale), never against one machine's int8 kernels."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from sasq.errors import UserError
from sasq.exporter.fp8 import E4M3_MAX, quantize_e4m3, to_fp8

F8 = ml_dtypes.float8_e4m3fn


def _parse(text: str, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    m = onnx.parser.parse_model(text)
    m.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    onnx.checker.check_model(m, full_check=True)
    return m


def _session(m: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _e4m3_error(x: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Largest |x - s * round_e4m3(x / s)| for |x| <= 448 s: half a step of x's binade."""
    return np.maximum(np.abs(x) * 2.0**-4, np.asarray(s) * 2.0**-10)


def test_per_channel_e4m3_weights_within_half_a_step():
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((64, 16)) * rng.uniform(0.01, 3, 16)).astype(np.float32)
    q, s = quantize_e4m3(W, axis=1)
    assert q.dtype == F8 and s.shape == (16,)
    np.testing.assert_allclose(s, np.abs(W).max(axis=0) / E4M3_MAX, rtol=1e-7)
    assert np.abs(q.astype(np.float32)).max(axis=0).tolist() == [E4M3_MAX] * 16
    err = np.abs(q.astype(np.float32) * s - W)
    assert np.all(err <= _e4m3_error(W, s) * (1 + 1e-6)) and err.max() > 0


LINEAR = """
<ir_version: 9, opset_import: ["" : 20]>
lin (float[8, 64] x) => (float[8, 16] y) {
    xq = QuantizeLinear(x, xs, zp)
    xd = DequantizeLinear(xq, xs, zp)
    wd = DequantizeLinear <axis = 1> (W_int8, ws, wz)
    y = MatMul(xd, wd)
}
"""


def test_linear_becomes_e4m3_within_the_fp8_bound():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((64, 16)).astype(np.float32) / 8
    ws = np.abs(W).max(axis=0) / 127
    m = _parse(LINEAR, {
        "xs": np.array(4 / 127, np.float32), "zp": np.array(0, np.int8),
        "W_int8": np.clip(np.rint(W / ws), -127, 127).astype(np.int8),
        "ws": ws.astype(np.float32), "wz": np.zeros(16, np.int8),
    })  # fmt: skip
    f8, report = to_fp8(m, {"W": W})
    onnx.checker.check_model(f8, full_check=True)
    inits = {t.name: t for t in f8.graph.initializer}
    dq_w = next(n for n in f8.graph.node if n.op_type == "DequantizeLinear" and "W" in n.input[0])
    assert inits[dq_w.input[0]].data_type == TensorProto.FLOAT8E4M3FN
    assert report.weights == 1 and report.scales == 1 and "W_int8" not in inits
    xs = numpy_helper.to_array(inits[next(n for n in f8.graph.node if n.op_type ==
                                          "QuantizeLinear").input[1]])  # fmt: skip
    assert np.isclose(xs, 4 / E4M3_MAX, rtol=1e-6)  # amax 4: 4/127 -> 4/448
    x = rng.uniform(-4, 4, (8, 64)).astype(np.float32)
    (y,) = _session(f8).run(None, {"x": x})
    e_x, e_w = _e4m3_error(x, xs), _e4m3_error(W, np.abs(W).max(axis=0) / E4M3_MAX)
    bound = np.abs(x) @ e_w + e_x @ np.abs(W) + e_x @ e_w + 1e-5
    err = np.abs(y - x @ W)
    assert np.all(err <= bound) and err.max() > 0.1 * bound.max()


CACHE = """
<ir_version: 9, opset_import: ["" : 20]>
kv (int8[2, N] past, float[2, 3] new) => (int8[2, M] present, float[2, M] read) {
    nq = QuantizeLinear(new, s, zp)
    present = Concat <axis = 1> (past, nq)
    read = DequantizeLinear(present, s, zp)
}
"""


def test_fp8_cache_append_keeps_stored_tokens_bit_exact_and_quantizes_new_ones_once():
    m = _parse(CACHE, {"s": np.array(0.5 / 127, np.float32), "zp": np.array(0, np.int8)})
    f8, report = to_fp8(m, {})
    onnx.checker.check_model(f8, full_check=True)
    io = {v.name: v.type.tensor_type.elem_type for v in [*f8.graph.input, *f8.graph.output]}
    assert io["past"] == io["present"] == TensorProto.FLOAT8E4M3FN and report.appends == 1
    ops = [n.op_type for n in f8.graph.node]
    assert ops.count("Concat") == 1 and ops.index("Concat") < ops.index("QuantizeLinear")
    s8 = 0.5 / E4M3_MAX
    rng = np.random.default_rng(2)
    past = (rng.uniform(-0.5, 0.5, (2, 5)) / s8).astype(F8)  # every kind of E4M3 value
    new = rng.uniform(-0.6, 0.6, (2, 3)).astype(np.float32)  # beyond 0.5 saturates at 448
    sess = _session(f8)
    feeds = {
        "past": ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            past.view(np.uint8), TensorProto.FLOAT8E4M3FN
        ),
        "new": ort.OrtValue.ortvalue_from_numpy(new),
    }
    present, read = sess.run_with_ort_values(["present", "read"], feeds)
    got = present.numpy().view(F8)
    assert np.array_equal(got[:, :5].view(np.uint8), past.view(np.uint8))
    want = np.clip(new / np.float32(s8), -E4M3_MAX, E4M3_MAX).astype(F8)
    assert np.array_equal(got[:, 5:].view(np.uint8), want.view(np.uint8))
    np.testing.assert_allclose(read.numpy(), got.astype(np.float32) * s8, rtol=3e-7)


SHIFT = """
<ir_version: 9, opset_import: ["" : 20]>
ss (float[4, 256] v, float[4, 1] d) => (float[4, 256] deq) {
    vs = Add(v, d)
    q = QuantizeLinear(vs, s, zp)
    deq = DequantizeLinear(q, s, zp)
}
"""


@pytest.mark.parametrize("n", [2, 4])
def test_value_shifts_on_the_e4m3_grid_cut_the_error_of_the_copies_mean_by_n(n):
    s_int8 = np.float32(1.0 / 127)
    m = _parse(SHIFT, {"s": np.array(s_int8), "zp": np.array(0, np.int8)})
    m.graph.node[0].name = "kv0_ss_vshift"  # the name shift_sum_cache gives it
    f8, report = to_fp8(m, {})
    assert report.value_shifts == 1
    onnx.checker.check_model(f8, full_check=True)
    sess = _session(f8)
    s8 = float(s_int8) * 127 / E4M3_MAX
    rng = np.random.default_rng(3)
    v = np.sign(rng.standard_normal((4, 256))) * np.exp(rng.uniform(-4, -0.2, (4, 256)))
    v = v.astype(np.float32)
    # the int8 graph's shift of copy c: (2c+1-n) s/(2n); here in units of v's E4M3 step
    copies = []
    for c in range(n):
        d = np.full((4, 1), (2 * c + 1 - n) * s_int8 / (2 * n), np.float32)
        (deq,) = sess.run(None, {"v": v, "d": d})
        copies.append(deq)
    mean = np.mean(copies, axis=0)
    e = np.maximum(np.floor(np.log2(np.abs(v) / s8)), -6)
    ulp = s8 * 2.0 ** (e - 3)
    lo, hi = s8 * 2.0 ** np.maximum(e, -6), s8 * 2.0 ** (e + 1)
    shifted = [np.abs(v + (2 * c + 1 - n) * ulp / (2 * n)) for c in range(n)]
    same_binade = np.all([(lo <= a) & (a < hi) for a in shifted], axis=0)
    same_binade |= e <= -6  # below 2^-6: one uniform (subnormal) step on both sides
    err_mean, err_plain = np.abs(mean - v), np.abs(_plain(v, s8) - v)
    assert same_binade.mean() > 0.5
    assert np.all(err_mean[same_binade] <= ulp[same_binade] / (2 * n) * (1 + 1e-5))
    assert np.all(err_plain <= ulp / 2 * (1 + 1e-5))
    assert err_mean.mean() < err_plain.mean() / (0.75 * n)  # the gain, on average


def _plain(v: np.ndarray, s8: float) -> np.ndarray:
    return np.clip(v / np.float32(s8), -E4M3_MAX, E4M3_MAX).astype(F8).astype(np.float32) * s8


def test_probability_shifts_are_dropped():
    m = _parse(
        """
        <ir_version: 9, opset_import: ["" : 20]>
        p (float[2, 4] p) => (float[2, 4] y) {
            ps = Add(p, off)
            q = QuantizeLinear(ps, s, zp)
            y = DequantizeLinear(q, s, zp)
        }
        """,
        {"off": np.full(4, 0.001, np.float32), "s": np.array(1 / 127, np.float32),
         "zp": np.array(0, np.int8)},
    )  # fmt: skip
    m.graph.node[0].name = "kv0_ss_pshift"
    f8, report = to_fp8(m, {})
    assert report.prob_shifts_dropped == 1 and "Add" not in [n.op_type for n in f8.graph.node]
    p = np.array([[0.5, 0.25, 0.125, 0.0625]] * 2, np.float32)
    (y,) = _session(f8).run(None, {"p": p})
    np.testing.assert_allclose(y, p, rtol=3e-7)  # powers of two: exact in E4M3, unshifted


def test_a_graph_before_opset_19_or_without_its_float_weights_is_refused():
    m = _parse(LINEAR.replace('"" : 20', '"" : 18'), {
        "xs": np.array(1 / 127, np.float32), "zp": np.array(0, np.int8),
        "W_int8": np.ones((64, 16), np.int8), "ws": np.ones(16, np.float32),
        "wz": np.zeros(16, np.int8),
    })  # fmt: skip
    with pytest.raises(UserError, match="opset 19"):
        to_fp8(m, {"W": np.ones((64, 16), np.float32)})
    m.opset_import[0].version = 20
    with pytest.raises(UserError, match="no float weight 'W'"):
        to_fp8(m, {})
