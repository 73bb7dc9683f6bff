"""exporter/shift_sum.py: the shift-and-sum math (error shrinks ~n times), the budgeted token
selection, and the expanded AV graph against a numpy reference for each step's selection."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from int8_sessions import exact_session
from onnx import TensorProto, helper

from sasq.engines.lint import LintConfig, lint
from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
from sasq.exporter.qdq_writer import write_qdq
from sasq.exporter.shift_sum import (
    choose_copies,
    copies_for,
    extra_keys_per_layer,
    fake_quant,
    shift_sum_dequant,
    shifts,
)
from sasq.quant.cache import CalibCache, TensorRange
from sasq.quant.settings import CalibSettings

B, H, L, D = 2, 2, 3, 16
V_AMAX = 2.0


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_shifts_are_symmetric_and_spaced_by_s_over_n():
    assert np.allclose(shifts(2, 1.0), [-0.25, 0.25])
    assert np.allclose(shifts(4, 1.0), [-0.375, -0.125, 0.125, 0.375])
    assert shifts(8, 1.0).sum() == pytest.approx(0.0)
    assert np.allclose(shifts(1, 1.0), [0.0])


def test_error_shrinks_about_n_times_on_uniform_data():
    rng = np.random.default_rng(0)
    s = V_AMAX / 127
    v = rng.uniform(-V_AMAX * 0.95, V_AMAX * 0.95, 200_000)
    plain = _rmse(fake_quant(v, s), v)
    assert plain == pytest.approx(s / np.sqrt(12), rel=0.02)
    ratios = {n: _rmse(shift_sum_dequant(v, s, n), v) / plain for n in (2, 4, 8)}
    assert 0.45 <= ratios[2] <= 0.55
    assert 0.2 <= ratios[4] <= 0.3 and ratios[4] < ratios[2]
    assert 0.1 <= ratios[8] <= 0.15 and ratios[8] < ratios[4]


def test_shifted_probabilities_sum_to_the_plain_rounding():
    """Hermite: sum_c round(y/n + (2c+1-n)/(2n)) == round(y): the prob_shift option keeps
    a token's probability exactly as accurate as without copies."""
    p = np.random.default_rng(1).uniform(0, 1, 5000)
    s = 1 / 127
    for n in (2, 4, 8):
        summed = sum(fake_quant(p / n + d, s) for d in shifts(n, s))
        assert np.allclose(summed, fake_quant(p, s), atol=1e-9)
        unshifted = n * fake_quant(p / n, s)
        assert _rmse(unshifted, p) > 1.5 * _rmse(summed, p)


def test_copies_formula_and_budget():
    a = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    assert copies_for(a, 0.1, 8).tolist() == [8, 2, 1, 1, 1, 1]
    assert copies_for(a, 0.01, 4).tolist() == [4, 4, 4, 4, 4, 4]
    for cap in (0, 1, 3, 7, 12, 40):
        n = choose_copies(a, cap, 8)
        assert int((n - 1).sum()) <= cap
        assert set(n.tolist()) <= {1, 2, 4, 8}
        assert all(n[i] >= n[i + 1] for i in range(len(a) - 1))  # more attention, more copies
    assert choose_copies(a, 0, 8).tolist() == [1] * 6
    # theta = 0.125 -> extra 4; the next breakpoint, theta = 0.1, would need 8 > 7
    assert choose_copies(a, 7, 8).tolist() == [4, 2, 1, 1, 1, 1]
    assert choose_copies(a, 1000, 8).tolist() == [8] * 6
    # 1% of a step whose linears do 100 K*N per token, 2 layers, H*D = 4: 0 extra keys
    assert extra_keys_per_layer(0.01, 100, 10, 4, 2) == 0
    assert extra_keys_per_layer(0.01, 1_000_000, 10, 64, 4) == 39


# ----- the expanded graph on a tiny attention block -----

# Two steps (S = 3, then 6 keys) with attention piled on different positions.
ATTN = ((0.7, 0.2, 0.1), (0.05, 0.05, 0.6, 0.1, 0.1, 0.1))


def attention_model() -> onnx.ModelProto:
    """scores [B,H,L,S] -> Softmax -> @ v [B,H,S,D] -> out (S dynamic)."""
    nodes = [
        helper.make_node("Softmax", ["scores"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["out"], name="av"),
    ]
    graph = helper.make_graph(
        nodes,
        "attn",
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [B, H, L, "S"]),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [B, H, "S", D]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, H, L, D])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def attention_cache() -> CalibCache:
    ranges = {"p": TensorRange(1.0), "v": TensorRange(V_AMAX)}
    return CalibCache("0" * 64, CalibSettings(), ranges, attention={"av": ATTN})


def reference(scores: np.ndarray, v: np.ndarray, n: np.ndarray, prob_shift: bool) -> np.ndarray:
    """sum over copies of DQ(Q(p/n + offset)) @ DQ(Q(v + d_c)), per exporter/shift_sum.py."""
    e = np.exp(scores - scores.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    sv, sp = V_AMAX / 127, 1 / 127
    out = np.zeros(p.shape[:-1] + (v.shape[-1],))
    for j, nj in enumerate(n):
        for c in range(nj):
            pj = p[..., j] / nj + (shifts(nj, sp)[c] if prob_shift else 0.0)
            vj = fake_quant(v[..., j, :] + shifts(nj, sv)[c], sv)
            out += fake_quant(pj, sp)[..., None] * vj[..., None, :]
    return out


def _run(model: onnx.ModelProto, S: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    feeds = {
        "scores": rng.normal(0, 2, (B, H, L, S)).astype(np.float32),
        "v": rng.uniform(-V_AMAX, V_AMAX, (B, H, S, D)).astype(np.float32),
    }
    # int8 products exact on every CPU (int8_sessions), so 1e-5 holds on AVX2 too
    return exact_session(model).run(["out"], feeds)[0], feeds


@pytest.mark.parametrize("prob_shift", [True, False])
def test_expanded_graph_matches_the_math_per_step(prob_shift):
    ss = ShiftSumConfig(enabled=True, mode="budget", budget=1.0, max_n=4, fuse=False,
                        prob_shift=prob_shift)  # fmt: skip
    q, report = write_qdq(attention_model(), attention_cache(), QuantConfig(shift_sum=ss))
    onnx.checker.check_model(q, full_check=True)
    assert lint(q, LintConfig(float_nodes=report.float_nodes)) == []
    assert [n.op_type for n in q.graph.node].count("Sum") == 1
    assert report.shift_sum["av"][0] > 0 and report.shift_sum["av"][1] > 0
    plain, _ = write_qdq(attention_model(), attention_cache(), QuantConfig())
    # cap = 1.0 x (2 S H D) / (H D) = 2 S extra keys: [4, 2, 1] (extra 4) at S = 3
    assert report.copies["av"][0] == [4, 2, 1]
    for si, S in enumerate((3, 6)):
        n = np.array(report.copies["av"][si])
        got, feeds = _run(q, S)
        want = reference(feeds["scores"], feeds["v"], n, prob_shift)
        assert np.abs(got - want).max() < 1e-5
        assert n.max() > 1
        plain_out, _ = _run(plain, S)
        assert np.abs(plain_out - got).max() > 1e-4  # the copies change the result
    # a key length no step has (S = 5): no copies, exactly the plain Q/DQ product
    got, feeds = _run(q, 5)
    plain_out, _ = _run(plain, 5)
    assert np.abs(got - plain_out).max() < 1e-6


def test_layers_glob_limits_the_expansion():
    ss = ShiftSumConfig(enabled=True, mode="all2", fuse=False, layers=("blocks.*",))
    q, report = write_qdq(attention_model(), attention_cache(), QuantConfig(shift_sum=ss))
    assert report.shift_sum == {} and "Sum" not in [n.op_type for n in q.graph.node]
    plain, _ = write_qdq(attention_model(), attention_cache(), QuantConfig())
    assert np.array_equal(_run(q, 6)[0], _run(plain, 6)[0])


def test_all2_gives_every_key_two_copies():
    ss = ShiftSumConfig(enabled=True, mode="all2", fuse=False)
    q, report = write_qdq(attention_model(), attention_cache(), QuantConfig(shift_sum=ss))
    # both copies of each of S = 3, 6 keys are extra columns (branch 0's rows are masked)
    assert report.shift_sum["av"] == [2 * 3, 2 * 6]
    got, feeds = _run(q, 6, seed=3)
    want = reference(feeds["scores"], feeds["v"], np.full(6, 2), True)
    assert np.abs(got - want).max() < 1e-5


def test_shift_sum_lowers_the_av_error_where_attention_piles_up():
    """Peaked attention (one key takes ~all of it): the AV error vs float drops with n."""
    rng = np.random.default_rng(5)
    S = 3
    scores = np.zeros((B, H, L, S), np.float32)
    scores[..., 0] = 12.0
    v = rng.uniform(-V_AMAX, V_AMAX, (B, H, S, D))
    e = np.exp(scores - scores.max(-1, keepdims=True))
    exact = (e / e.sum(-1, keepdims=True)) @ v
    err = {n0: _rmse(reference(scores, v, np.array([n0, 1, 1]), True), exact) for n0 in (1, 2, 8)}
    assert err[2] < 0.7 * err[1] and err[8] < 0.4 * err[1]
