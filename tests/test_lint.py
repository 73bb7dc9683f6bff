"""engines/lint.py: clean Q/DQ graphs pass (and are valid, runnable, accurate); each seeded
defect is reported as exactly its own rule; tiny float GEMMs are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from int8_sessions import exact_session
from onnx import TensorProto, helper, numpy_helper
from qdq_builders import ACT_RANGE, attention, fake_quant, init, linear

from sasq.engines.lint import Coverage, LintConfig, Rule, format_violations, lint, lint_or_raise
from sasq.errors import UserError


def rules(model: onnx.ModelProto, cfg: LintConfig | None = None) -> set[Rule]:
    return {v.rule for v in lint(model, cfg or LintConfig())}


def arr(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def set_init(model: onnx.ModelProto, name: str, value, dtype=np.float32) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    i = next(i for i, t in enumerate(m.graph.initializer) if t.name == name)
    m.graph.initializer[i].CopyFrom(init(name, value, dtype))
    return m


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def bypass(model: onnx.ModelProto, *names: str) -> onnx.ModelProto:
    """Remove the named single-input pass-through nodes (a Q, a DQ), rewiring their users."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for name in names:
        n = node(m, name)
        for other in m.graph.node:
            other.input[:] = [n.input[0] if x == n.output[0] else x for x in other.input]
        m.graph.node.remove(n)
    return m


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The first output, int8 products exact on every CPU (``int8_sessions``: these 8-bit
    graphs run as s8 x s8, so the 1e-5 tolerances hold on AVX2 too)."""
    return exact_session(model).run(None, feeds)[0]


def inputs(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return np.clip(rng.standard_normal(shape), -ACT_RANGE, ACT_RANGE).astype(np.float32)


# --- clean graphs ---------------------------------------------------------------------------


@pytest.mark.parametrize("gemm", [False, True], ids=["matmul", "gemm_transB"])
def test_clean_linear_passes_is_valid_and_within_quantization_error(gemm):
    m = linear(gemm_transB=gemm)
    assert lint(m) == []
    onnx.checker.check_model(m, full_check=True)
    x = inputs(np.random.default_rng(1), 4, 32)
    y = run(m, {"x": x})
    w_int8 = arr(m, "W").astype(np.float32)
    w_q = (w_int8.T if gemm else w_int8) * arr(m, "w_scale")  # [K, N], dequantized
    s_x = float(arr(m, "x_scale"))
    x_q = fake_quant(x, s_x)
    np.testing.assert_allclose(y, x_q @ w_q + arr(m, "b"), rtol=1e-5, atol=1e-5)  # ONNX's Q/DQ
    # vs float activations: |x - x_q| <= s_x / 2 (x within +-127 s_x), so per output
    # |x W_q - x_q W_q| <= s_x / 2 * sum_k |W_q[k, n]|
    bound = s_x / 2 * np.abs(w_q).sum(0)
    err = np.abs(y - (x @ w_q + arr(m, "b")))
    np.testing.assert_array_less(err, np.broadcast_to(bound + 1e-5, err.shape))


def test_clean_attention_passes_is_valid_and_within_quantization_error():
    m = attention(H=2, S=16, D=16)
    assert lint(m) == []
    onnx.checker.check_model(m, full_check=True)
    rng = np.random.default_rng(2)
    q, k, v = (inputs(rng, 2, 16, 16) for _ in range(3))
    out = run(m, {"q": q, "k": k, "v": v})

    qs = q / np.float32(4.0)
    logits = qs @ k.transpose(0, 2, 1)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    s_q, s_k, s_v = (float(arr(m, n)) for n in ("q_scale", "k_scale", "v_scale"))
    qs_q = fake_quant(qs, s_q)
    # logit error <= s_q/2 sum_d |k| + s_k/2 sum_d |qs_q|; softmax moves p by <= p (e^{2E} - 1);
    # the probabilities' Q adds <= 1/254 each, V's Q <= s_v / 2.
    e_logit = s_q / 2 * np.abs(k).sum(-1)[:, None, :] + s_k / 2 * np.abs(qs_q).sum(-1)[..., None]
    E = e_logit.max(-1, keepdims=True)
    dp = p * np.expm1(2 * E) + 1 / 254
    bound = dp @ np.abs(v) + (p + dp).sum(-1, keepdims=True) * s_v / 2
    err = np.abs(out - p @ v)
    np.testing.assert_array_less(err, bound + 1e-5)
    assert err.max() < 0.05


# --- one test per rule: seed exactly that defect --------------------------------------------


def test_uint8_zero_point():
    m = set_init(linear(), "x_zp", 0, np.uint8)
    # the parser's table has no DequantizeLinear on UINT8 either
    assert rules(m) == {Rule.ZERO_POINT_TYPE, Rule.UNSUPPORTED_DTYPE}


def test_ort_target_takes_uint8_activations_with_any_zero_point_but_not_uint8_weights():
    """ONNX Runtime's x86 kernels take uint8 activations (the bounded u8 x s8 form writes
    queries at zero point 64); TensorRT does not, and weights stay signed for both."""
    ort_rules = LintConfig(target="ort")
    m = set_init(linear(), "x_zp", 64, np.uint8)
    assert rules(m, ort_rules) == set()
    # and TensorRT's parser table has no DequantizeLinear on UINT8
    assert rules(m) == {Rule.ZERO_POINT_TYPE, Rule.ZERO_POINT_NONZERO, Rule.UNSUPPORTED_DTYPE}
    w = set_init(set_init(linear(), "w_zp", np.zeros(24), np.uint8), "W",
                 arr(linear(), "W").astype(np.int16) + 128, np.uint8)  # fmt: skip
    assert rules(w, ort_rules) == {Rule.ZERO_POINT_TYPE}


def test_missing_zero_point_on_quantize_means_uint8():
    m = linear()
    for n in ("fc/x/Q", "fc/x/DQ"):
        del node(m, n).input[2]
    assert rules(m) == {Rule.ZERO_POINT_TYPE, Rule.UNSUPPORTED_DTYPE}


def test_int4_weights_only_where_configured():
    m = linear()
    for t in m.graph.initializer:
        if t.name in ("W", "w_zp"):
            t.data_type = TensorProto.INT4  # only the type matters to the lint
    assert rules(m) == {Rule.ZERO_POINT_TYPE}
    assert rules(m, LintConfig(allow_int4_weights=True)) == set()


def test_nonzero_zero_point():
    m = set_init(linear(), "x_zp", 3, np.int8)
    assert rules(m) == {Rule.ZERO_POINT_NONZERO}


def test_scale_as_graph_input_is_not_constant():
    m = linear()
    scale = next(t for t in m.graph.initializer if t.name == "x_scale")
    m.graph.initializer.remove(scale)
    m.graph.input.append(helper.make_tensor_value_info("x_scale", TensorProto.FLOAT, []))
    assert rules(m) == {Rule.SCALE_NOT_CONSTANT}


def test_scale_through_identity_or_constant_node_is_constant():
    m = linear()
    scale = next(t for t in m.graph.initializer if t.name == "x_scale")
    m.graph.initializer.remove(scale)
    m.graph.node.insert(0, helper.make_node("Constant", [], ["s0"], value=scale, name="c"))
    m.graph.node.insert(1, helper.make_node("Identity", ["s0"], ["x_scale"], name="id"))
    onnx.checker.check_model(m, full_check=True)
    assert lint(m) == []


@pytest.mark.parametrize("bad", [0.0, -0.01, np.inf, np.nan])
def test_weight_scale_not_positive_finite(bad):
    m = linear()
    s = arr(m, "w_scale").copy()
    s[3] = bad
    assert rules(set_init(m, "w_scale", s)) == {Rule.SCALE_VALUE}


def test_activation_scale_zero():
    assert rules(set_init(linear(), "x_scale", 0.0)) == {Rule.SCALE_VALUE}


def test_per_tensor_weight_scale_where_per_channel_expected():
    m = linear()
    m = set_init(m, "w_scale", arr(m, "w_scale").max())
    m = set_init(m, "w_zp", 0, np.int8)
    assert rules(m) == {Rule.WEIGHT_GRANULARITY}


@pytest.mark.parametrize("gemm", [False, True], ids=["matmul_axis0", "gemm_transB_axis1"])
def test_weight_scale_on_wrong_axis(gemm):
    m = linear(K=32, N=24, gemm_transB=gemm)
    dq = node(m, "fc/W/DQ")
    dq.attribute[0].i = 1 if gemm else 0  # the K axis
    m = set_init(m, "w_scale", np.full(32, 0.01))  # sized for that axis, so still valid ONNX
    m = set_init(m, "w_zp", np.zeros(32), np.int8)
    assert rules(m) == {Rule.WEIGHT_GRANULARITY}


def _transposed_weight(axis: int) -> onnx.ModelProto:
    """The linear with W stored [N, K], DQ per-channel on `axis`, then Transpose -> MatMul."""
    m = linear(K=32, N=24)
    w = next(t for t in m.graph.initializer if t.name == "W")
    w.CopyFrom(init("W", arr(m, "W").T, np.int8))
    dq = node(m, "fc/W/DQ")
    dq.output[0], dq.attribute[0].i = "W_NK_dq", axis
    m.graph.node.insert(3, helper.make_node("Transpose", ["W_NK_dq"], ["W_dq"], perm=[1, 0]))
    return m


def test_weight_axis_is_followed_through_transpose():
    m = _transposed_weight(axis=0)
    onnx.checker.check_model(m, full_check=True)
    assert lint(m) == []
    m = set_init(_transposed_weight(axis=1), "w_scale", np.full(32, 0.01))
    assert rules(set_init(m, "w_zp", np.zeros(32), np.int8)) == {Rule.WEIGHT_GRANULARITY}


def test_activation_scale_per_channel():
    m = linear(K=32)
    for n in ("fc/x/Q", "fc/x/DQ"):
        node(m, n).attribute.append(helper.make_attribute("axis", 1))
    m = set_init(m, "x_scale", np.full(32, ACT_RANGE / 127))
    m = set_init(m, "x_zp", np.zeros(32), np.int8)
    assert rules(m) == {Rule.ACTIVATION_GRANULARITY}


def test_linear_with_float_weight_is_one_sided():
    m = linear()
    w = fake_quant(arr(m, "W").astype(np.float32) * arr(m, "w_scale"), 1.0)
    m = set_init(bypass(m, "fc/W/DQ"), "W", w)
    assert rules(m) == {Rule.MATMUL_ONE_SIDED}


_DROPS = {"QK^T_k": ("attn/k/Q", "attn/k/DQ"), "AV_v": ("attn/v/Q", "attn/v/DQ"),
          "AV_p": ("attn/p/Q", "attn/p/DQ")}  # fmt: skip


@pytest.mark.parametrize("drop", _DROPS.values(), ids=_DROPS.keys())
def test_attention_matmul_with_one_dq_input(drop):
    assert rules(bypass(attention(), *drop)) == {Rule.MATMUL_ONE_SIDED}


@pytest.mark.parametrize(
    "domain,op",
    [
        ("", "MatMulInteger"),
        ("", "DynamicQuantizeLinear"),
        ("", "QLinearMatMul"),
        ("com.microsoft", "Gelu"),
    ],
)
def test_unsupported_op(domain, op):
    m = linear()
    m.graph.node.append(helper.make_node(op, ["y"], ["extra"], domain=domain, name="odd"))
    found = lint(m)
    assert [(v.rule, v.node) for v in found] == [(Rule.UNSUPPORTED_OP, "odd")]
    extra = frozenset({f"{domain}::{op}" if domain else op})
    assert lint(m, LintConfig(extra_ops=extra)) == []


def test_unsupported_op_inside_a_subgraph():
    m = linear()
    body = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"], name="deep")],
                             "then", [], [])  # fmt: skip
    m.graph.node.append(helper.make_node("If", ["cond"], [], then_branch=body, else_branch=body))
    assert rules(m) == {Rule.UNSUPPORTED_OP}


def test_opset_too_low():
    m = linear()
    m.opset_import[0].version = 12
    assert rules(m) == {Rule.OPSET}
    assert rules(linear(), LintConfig(min_opset=18)) == {Rule.OPSET}


def test_softmax_output_scale_not_1_over_127():
    m = set_init(attention(), "p_scale", 1.0 / 255.0)
    found = lint(m)
    assert [(v.rule, v.node) for v in found] == [(Rule.SOFTMAX_SCALE, "attn/p/Q")]
    assert lint(set_init(attention(), "p_scale", np.float32(1.0) / np.float32(127.0))) == []


def test_quantize_not_followed_by_dequantize():
    m = linear()
    m.graph.node.append(helper.make_node("Cast", ["x_q"], ["x_i32"], to=TensorProto.INT32))
    # and a Cast of INT8 is not in the parser's table (quantized types live between Q and DQ)
    assert rules(m) == {Rule.QDQ_PAIR, Rule.UNSUPPORTED_DTYPE}


# --- rules that must not fire -----------------------------------------------------------------


def _with_float_matmul(K: int, N: int, name: str = "small/MatMul") -> onnx.ModelProto:
    m = linear()
    m.graph.initializer.append(init("W_small", np.ones((K, N))))
    m.graph.node.append(helper.make_node("MatMul", ["y", "W_small"], ["z"], name=name))
    return m


def test_small_unquantized_matmul_is_not_a_violation():
    m = _with_float_matmul(K=24, N=8)
    m.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 8]))
    onnx.checker.check_model(m, full_check=True)
    assert lint(m) == []  # N < 16: stays float by default


def test_large_unquantized_matmul_needs_quantizing_or_listing_as_float():
    m = _with_float_matmul(K=24, N=32, name="blk0/fc2/MatMul")
    assert rules(m) == {Rule.UNQUANTIZED_MATMUL}
    assert lint(m, LintConfig(float_nodes=("*/fc2/*",))) == []
    assert lint(m, LintConfig(coverage=Coverage.TOUCHED)) == []
    assert lint(m, LintConfig(min_gemm_dim=64)) == []


# --- reporting, files ---------------------------------------------------------------------------


def test_format_violations_one_line_each_then_summary():
    found = lint(set_init(linear(), "x_zp", 3, np.int8))
    lines = format_violations(found).splitlines()
    assert len(lines) == len(found) + 1 == 3
    assert lines[0].startswith("[zero-point-nonzero] fc/x/Q:")
    assert lines[-1] == "TensorRT lint FAILED: 2 violation(s) (zero-point-nonzero x2)"
    assert "PASSED" in format_violations([])


def test_lint_or_raise_on_files_with_external_data(tmp_path):
    clean, bad = tmp_path / "clean.onnx", tmp_path / "bad.onnx"
    # size_threshold=0: every initializer, scales included, lives in the external file
    onnx.save(attention(), clean, save_as_external_data=True, location="clean.data",
              size_threshold=0)  # fmt: skip
    lint_or_raise(clean)
    assert lint(str(clean)) == []
    onnx.save(set_init(attention(), "p_scale", 0.5), bad, save_as_external_data=True,
              location="bad.data", size_threshold=0)  # fmt: skip
    with pytest.raises(UserError, match=r"TensorRT lint: 1 violation\(s\) \(softmax-scale x1\)"):
        lint_or_raise(bad)
    with pytest.raises(UserError, match="no ONNX model"):
        lint_or_raise(tmp_path / "missing.onnx")
