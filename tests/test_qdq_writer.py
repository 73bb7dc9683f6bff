"""exporter/qdq_writer.py: on a small float block (AdaLN GEMV, linears, a tiny GEMM,
single-head attention) the writer places TensorRT-style Q/DQ with the calibrated scales,
keeps the configured ops float, passes the lint, and matches a numpy fake-quant reference
under ONNX Runtime."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from int8_sessions import exact_session, run_exact
from onnx import TensorProto, helper, numpy_helper

from sasq.engines.lint import LintConfig, Rule, lint
from sasq.engines.recorder import ActivationRecorder
from sasq.errors import UserError
from sasq.exporter.qdq_config import QuantConfig
from sasq.exporter.qdq_per_step import StepKey
from sasq.exporter.qdq_writer import write_qdq
from sasq.exporter.shift_sum import fake_quant
from sasq.quant.cache import CalibCache, TensorRange
from sasq.quant.settings import CalibSettings
from sasq.quant.targets import quantizable_inputs

B, L, C, F = 2, 5, 32, 48


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w = {n: rng.normal(0, 1 / np.sqrt(C), (C, C)).astype(np.float32) for n in "qkv"}
    w["W1"] = rng.normal(0, 1 / np.sqrt(C), (C, F)).astype(np.float32)
    w["b1"] = rng.normal(0, 0.1, F).astype(np.float32)
    w["W2"] = rng.normal(0, 1 / np.sqrt(F), (F, C)).astype(np.float32)
    w["Wt"] = rng.normal(0, 1, (C, 8)).astype(np.float32)
    w["Wa"] = rng.normal(0, 0.1, (2 * C, C)).astype(np.float32)  # Gemm transB: [N, K]
    w["ba"] = np.zeros(2 * C, np.float32)
    return w


def block() -> onnx.ModelProto:
    w = _weights()
    mm = helper.make_node
    nodes = [
        mm("Gemm", ["cond", "Wa", "ba"], ["ada"], name="ada_lin", transB=1),
        mm("MatMul", ["x", "W1"], ["h0"], name="fc1"),
        mm("Add", ["h0", "b1"], ["h"], name="fc1_bias"),
        mm("Relu", ["h"], ["r"], name="relu"),
        mm("MatMul", ["r", "W2"], ["y"], name="fc2"),
        mm("MatMul", ["x", "Wt"], ["t"], name="tiny"),
        mm("MatMul", ["x", "q"], ["xq"], name="q_proj"),
        mm("MatMul", ["x", "k"], ["xk"], name="k_proj"),
        mm("MatMul", ["x", "v"], ["xv"], name="v_proj"),
        mm("Transpose", ["xk"], ["kT"], name="k_t", perm=[0, 2, 1]),
        mm("MatMul", ["xq", "kT"], ["s"], name="qk"),
        mm("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        mm("MatMul", ["p", "xv"], ["o"], name="av"),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", f, [B, "L", C]),
         helper.make_tensor_value_info("cond", f, [B, C])],
        [helper.make_tensor_value_info(n, f, None) for n in ("ada", "h", "y", "t", "o")],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return onnx.shape_inference.infer_shapes(model)


def feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(0, 1, (B, L, C)).astype(np.float32),
            "cond": rng.normal(0, 1, (B, C)).astype(np.float32)}  # fmt: skip


@pytest.fixture(scope="module")
def cache() -> CalibCache:
    """Ranges = the exact amax of every quantizable input on the test feeds."""
    model = block()
    names = [a for t in quantizable_inputs(model) for a in t.activations]
    ranges = {}
    for seed in range(3):
        _, rec = ActivationRecorder(model, names).run(feeds(seed))
        for n, v in rec.items():
            ranges[n] = max(ranges.get(n, 0.0), float(np.abs(v).max()))
    return CalibCache("0" * 64, CalibSettings(), {n: TensorRange(a) for n, a in ranges.items()})


def run(model: onnx.ModelProto, f: dict) -> dict[str, np.ndarray]:
    """Every output; int8 products exact on every CPU (``int8_sessions``)."""
    return run_exact(model, f)


def init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def producer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if tensor in n.output)


def test_layout_scales_and_lint(cache):
    """The TensorRT layout (the ort target's bounded weights: test_u8s8)."""
    q, report = write_qdq(block(), cache, QuantConfig(target="tensorrt"))
    onnx.checker.check_model(q, full_check=True)
    assert report.kept_float == {"ada_lin": "gemv (no token axis)", "tiny": "tiny (K, N = 32, 8)"}
    assert sorted(report.quantized) == sorted(["fc1", "fc2", "q_proj", "k_proj", "v_proj",
                                               "qk", "av"])  # fmt: skip
    assert lint(q, LintConfig(float_nodes=report.float_nodes)) == []
    rules = {v.rule for v in lint(q, LintConfig())}
    assert rules == {Rule.UNQUANTIZED_MATMUL}  # the GEMV must be named to the lint
    names = {t.name for t in q.graph.initializer}
    assert "W1" not in names and "Wt" in names and "Wa" in names
    # weight: int8 per output channel (axis 1 of [K, N]), scale = max |W| / 127 per column
    fc1 = next(n for n in q.graph.node if n.name == "fc1")
    wdq = producer(q, fc1.input[1])
    assert wdq.op_type == "DequantizeLinear"
    assert next(a.i for a in wdq.attribute if a.name == "axis") == 1
    W1 = _weights()["W1"]
    w_int8, w_scale = init(q, wdq.input[0]), init(q, wdq.input[1])
    assert w_int8.dtype == np.int8 and w_int8.shape == (C, F)
    assert np.allclose(w_scale, np.abs(W1).max(0) / 127, rtol=1e-6)
    assert np.abs(w_int8).max() == 127
    assert np.abs(w_int8 * w_scale - W1).max() <= w_scale.max() / 2 + 1e-7
    # activation: per tensor amax / 127; softmax probabilities at 1/127; int8 zero points
    xdq = producer(q, fc1.input[0])
    assert init(q, xdq.input[1]) == pytest.approx(cache.ranges["x"].amax / 127, rel=1e-6)
    av = next(n for n in q.graph.node if n.name == "av")
    assert init(q, producer(q, av.input[0]).input[1]) == pytest.approx(1 / 127, rel=1e-7)
    zps = [init(q, n.input[2]) for n in q.graph.node if n.op_type.endswith("Linear")]
    assert all(z.dtype == np.int8 and not z.any() for z in zps)


@pytest.mark.parametrize("form", ["bounded", "full"])
def test_numerics_match_fake_quant_reference(cache, form):
    """fc1's output equals the numpy fake-quant reference to float round-off, the float ops
    are untouched, y and o keep 25-80 dB against FP; on every CPU (issue 27), because each
    form runs with exact integer sums: the ort target's default bounded form rounds the
    weights to 64 steps (7 bits, u8s8.py), so the reference does too and ORT's u8 x s8
    kernels cannot saturate (every pair fits int16, proven from the graph); the full 8-bit
    form runs as s8 x s8, which ort_session's policy opens for it on a CPU without VNNI
    and which the session here is told to assume. The tolerances are the same as before."""
    q, _ = write_qdq(block(), cache, QuantConfig(u8s8=form))
    f = feeds(1)
    got, ref = run_exact(q, f), run(block(), f)
    exact_session(q, bounded=form == "bounded")  # which way the products are exact
    W1, b1 = _weights()["W1"], _weights()["b1"]
    steps = 64 if form == "bounded" else 127
    fc1 = next(n for n in q.graph.node if n.name == "fc1")
    s1 = init(q, producer(q, fc1.input[1]).input[1])  # the writer's scales: max |W| / steps
    assert np.allclose(s1, np.abs(W1).max(0) / steps, rtol=1e-6)
    w_q = np.clip(np.rint(W1 / s1), -steps, steps) * s1
    want_h = fake_quant(f["x"], cache.ranges["x"].amax / 127) @ w_q + b1
    assert np.abs(got["h"] - want_h).max() < 1e-4
    assert np.array_equal(got["ada"], ref["ada"]) and np.array_equal(got["t"], ref["t"])
    for name in ("y", "o"):
        sqnr = 10 * np.log10((ref[name] ** 2).sum() / ((ref[name] - got[name]) ** 2).sum())
        assert 25 < sqnr < 80, (name, sqnr)


def test_float_nodes_globs_match_node_or_weight_names(cache):
    q, report = write_qdq(block(), cache, QuantConfig(float_nodes=("fc2", "v*")))
    assert (
        report.kept_float["fc2"] == "float_nodes" and report.kept_float["v_proj"] == "float_nodes"
    )
    assert "fc1" in report.quantized
    assert lint(q, LintConfig(float_nodes=report.float_nodes)) == []
    _, r2 = write_qdq(block(), cache, QuantConfig(min_gemm_dim=64))
    assert r2.kept_float["fc1"] == "tiny (K, N = 32, 48)" and "tiny" in r2.kept_float


def test_narrow_bits_are_simulated_with_clip(cache):
    q, _ = write_qdq(block(), cache, QuantConfig(w_bits=4, a_bits=6))
    clips = [n for n in q.graph.node if n.op_type == "Clip"]
    assert clips and all(producer(q, c.input[0]).op_type == "QuantizeLinear" for c in clips)
    assert all(init(q, c.input[2]) == 31 and init(q, c.input[1]) == -31 for c in clips)
    fc1 = next(n for n in q.graph.node if n.name == "fc1")
    w_int8 = init(q, producer(q, fc1.input[1]).input[0])
    assert np.abs(w_int8).max() == 7
    f = feeds(2)
    got = run(q, f)["h"]
    W1, b1 = _weights()["W1"], _weights()["b1"]
    s1 = np.abs(W1).max(0) / 7
    sx = cache.ranges["x"].amax / 31
    want = fake_quant(f["x"], sx, qmax=31) @ (np.clip(np.rint(W1 / s1), -7, 7) * s1) + b1
    assert np.abs(got - want).max() < 1e-4
    ref = run(block(), f)["h"]
    err8 = np.abs(run(write_qdq(block(), cache, QuantConfig())[0], f)["h"] - ref).mean()
    assert np.abs(got - ref).mean() > 4 * err8


def test_missing_range_is_a_user_error(cache):
    ranges = {k: v for k, v in cache.ranges.items() if k != "r"}
    bad = CalibCache(cache.model_hash, cache.settings, ranges)
    with pytest.raises(UserError, match="no range for r .input of fc2"):
        write_qdq(block(), bad, QuantConfig())


def test_static_per_step_scales_equal_a_cache_of_that_step(cache):
    """Row scaling around a fixed-scale Q/DQ == quantizing with that step's own range; the
    step comes from the length of ``past`` (0 -> step 0, 3 -> step 1, else fixed)."""
    model = block()
    past = helper.make_tensor_value_info("past", TensorProto.FLOAT, [B, "P", C])
    model.graph.input.append(past)
    fracs = (0.35, 0.8)  # step ranges as fractions of the overall amax
    stepped = {k: TensorRange(v.amax, tuple(f * v.amax for f in fracs))
               for k, v in cache.ranges.items()}  # fmt: skip
    ps_cache = CalibCache(cache.model_hash, cache.settings, stepped)
    key = StepKey("past", 1, (0, 3))
    q, _ = write_qdq(model, ps_cache, QuantConfig(static_per_step=True), key)
    onnx.checker.check_model(q, full_check=True)
    assert Counter(n.op_type for n in q.graph.node)["Shape"] == 1
    f = feeds(3)
    for P, frac in ((0, fracs[0]), (3, fracs[1]), (7, 1.0)):
        g = {**f, "past": np.zeros((B, P, C), np.float32)}
        fixed = {k: TensorRange(frac * v.amax) for k, v in cache.ranges.items()}
        ref_q, _ = write_qdq(model, CalibCache(cache.model_hash, cache.settings, fixed),
                             QuantConfig())  # fmt: skip
        got, want = run(q, g), run(ref_q, g)
        for name in ("h", "y", "o"):
            assert np.abs(got[name] - want[name]).max() < 2e-5, (P, name)
    lint_q = lint(q, LintConfig(float_nodes=("ada_lin", "tiny")))
    assert lint_q == []
    with pytest.raises(UserError, match="step key"):
        write_qdq(model, ps_cache, QuantConfig(static_per_step=True))


def test_shared_weight_is_quantized_once():
    W = np.random.default_rng(4).normal(0, 0.2, (C, C)).astype(np.float32)
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["a"], name="mm_a"),
         helper.make_node("MatMul", ["a", "W"], ["b"], name="mm_b")],
        "shared",
        [helper.make_tensor_value_info("x", f, [B, "L", C])],
        [helper.make_tensor_value_info("b", f, [B, "L", C])],
        [numpy_helper.from_array(W, "W")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    ranges = {"x": TensorRange(4.0), "a": TensorRange(4.0)}
    q, report = write_qdq(model, CalibCache("0" * 64, CalibSettings(), ranges), QuantConfig())
    assert report.quantized == ["mm_a", "mm_b"]
    ops = Counter(n.op_type for n in q.graph.node)
    assert ops["DequantizeLinear"] == 3 and ops["QuantizeLinear"] == 2  # 1 weight + 2 acts
    int8 = [tuple(t.dims) for t in q.graph.initializer if t.data_type == TensorProto.INT8]
    assert [d for d in int8 if len(d) == 2] == [(C, C)]
    assert lint(q) == []


def test_config_validation():
    with pytest.raises(UserError, match="w_bits"):
        QuantConfig(w_bits=9)
    with pytest.raises(UserError, match="power of 2"):
        from sasq.exporter.qdq_config import ShiftSumConfig

        ShiftSumConfig(max_n=3)
