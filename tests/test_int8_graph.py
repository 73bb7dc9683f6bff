"""engines/int8_graph.py: the integer GEMMs ONNX Runtime runs for small Q/DQ graphs, read
off ORT's own optimized graph, with operand bounds that decide saturation: an 8-bit
linear and 8-bit attention operands over an int8 cache can saturate, the bounded forms of
``exporter/u8s8.py`` cannot, and what a bounded graph computes under ORT equals the numpy
integer reference whether the pair sums are exact (VNNI) or saturating (AVX2, emulated)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from qdq_builders import fake_quant, linear

from sasq.engines.int8_graph import int8_products
from sasq.engines.int8_kernels import exact_matmul, maddubs_matmul
from sasq.exporter.qdq_edit import GraphEdit
from sasq.exporter.qdq_writer import add_qdq
from sasq.exporter.u8s8 import probs_qdq, query_qdq

H, L, S, D = 2, 4, 12, 16
S_Q, S_K, S_V = 0.02, 0.03, 0.025


def _narrow_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The linear's int8 weights halved to |w| <= 64 (the bounded form's grid)."""
    for t in model.graph.initializer:
        if t.name == "W":
            w = numpy_helper.to_array(t).astype(np.int32)
            t.CopyFrom(numpy_helper.from_array((w // 2).astype(np.int8), "W"))
    return model


def test_an_8bit_linear_can_saturate_and_a_7bit_one_cannot():
    (p,) = int8_products(linear(M=8, K=64, N=32))
    assert p.op_type == "MatMulIntegerToFloat" and p.u8s8
    assert p.a_type == "uint8" and p.a_range == (0, 255)  # s8 activations shifted by 128
    assert p.b_range[1] == 127 and p.can_saturate
    (q,) = int8_products(_narrow_weights(linear(M=8, K=64, N=32)))
    assert max(-q.b_range[0], q.b_range[1]) <= 64 and not q.can_saturate


def attention(bounded: bool) -> onnx.ModelProto:
    """softmax(DQ(q) @ DQ(K cache)) and its product with DQ(V cache), the caches int8 graph
    inputs ([H, D, S] and [H, S, D]); q and P in signed int8, or in the bounded forms."""
    f = TensorProto.FLOAT
    g = helper.make_graph(
        [], "attn",
        [helper.make_tensor_value_info("q", f, [H, L, D]),
         helper.make_tensor_value_info("kc", TensorProto.INT8, [H, D, S]),
         helper.make_tensor_value_info("vc", TensorProto.INT8, [H, S, D])],
        [helper.make_tensor_value_info("out", f, [H, L, D])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    e = GraphEdit(m)

    def dq(x: str, s: float) -> str:
        sc = e.const(f"{x}_s", np.array(s, np.float32))
        return e.node("DequantizeLinear", [x, sc, e.const(f"{x}_z", np.int8(0))], f"{x}_dq")[0]

    q = query_qdq(e, "q", S_Q, 127, "q") if bounded else add_qdq(e, "q", S_Q, "q")
    logits = e.node("MatMul", [q, dq("kc", S_K)], "qk")[0]
    p = e.node("Softmax", [logits], "softmax", axis=-1)[0]
    p = probs_qdq(e, p, 1 / 127, "p") if bounded else add_qdq(e, p, 1 / 127, "p")
    e.node_to("MatMul", [p, dq("vc", S_V)], ["out"], "av")
    return e.finish()


@pytest.mark.parametrize("bounded", [False, True])
def test_attention_over_an_int8_cache(bounded):
    """8-bit q and P become u8 0..255 and 128..255 against any int8 of the cache: both can
    saturate. The bounded forms: q 0..128, P 0..127 (uint8 zero point 0), both exact."""
    model = attention(bounded)
    onnx.checker.check_model(model, full_check=True)
    got = {p.node: p for p in int8_products(model)}
    assert set(got) == {"qk", "av"}
    assert all(p.u8s8 and p.b_range == (-128, 127) for p in got.values())
    if bounded:
        assert got["qk"].a_range == (0, 128) and got["av"].a_range == (0, 127)
        assert not any(p.can_saturate for p in got.values())
    else:
        assert got["qk"].a_range == (0, 255) and got["av"].a_range == (128, 255)
        assert all(p.can_saturate for p in got.values())


def _feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.normal(0, 1.5, (H, L, D)).astype(np.float32)  # beyond +-64 steps: the Clip acts
    return {"q": q, "kc": rng.integers(-128, 128, (H, D, S)).astype(np.int8),
            "vc": rng.integers(-128, 128, (H, S, D)).astype(np.int8)}  # fmt: skip


def _reference(f: dict[str, np.ndarray], kernel) -> np.ndarray:
    """The bounded graph in numpy integers, each GEMM through ``kernel`` on the raw u8 / s8
    operands ORT feeds it (zero points subtracted afterwards, as MLAS does)."""
    s_q = S_Q * 127 / 64
    raw_q = np.clip(np.rint(np.clip(f["q"], -64 * s_q, 64 * s_q) / np.float32(s_q)) + 64, 0, 255)
    out = np.zeros((H, L, D), np.float64)
    for h in range(H):
        a, k = raw_q[h].astype(np.uint8), f["kc"][h]
        acc = kernel(a, k) - 64 * k.astype(np.int64).sum(0)  # (a - 64) @ k
        logits = acc * np.float32(s_q) * S_K
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
        raw_p = np.clip(np.rint(p * np.float32(127)), 0, 255).astype(np.uint8)
        out[h] = kernel(raw_p, f["vc"][h]) * (1 / 127) * S_V
    return out


def test_a_bounded_graph_computes_the_same_numbers_with_saturating_kernels():
    """What ORT computes for the bounded attention equals the integer reference, and that
    reference is the same through the emulated AVX2 kernel as through exact arithmetic:
    a CPU without VNNI gives these numbers too. (Tolerance: float32 round-off of the
    softmax and the scales, 1e-5 of outputs of size ~1; a saturated pair would move an
    output by 1e-2 or more.)"""
    model = attention(bounded=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed in range(3):
        f = _feeds(seed)
        (got,) = sess.run(None, f)
        exact, avx2 = _reference(f, exact_matmul), _reference(f, maddubs_matmul)
        assert np.array_equal(exact, avx2)
        assert np.abs(got - exact).max() <= 1e-5 * max(1.0, np.abs(exact).max())


def test_full_8bit_attention_differs_on_a_cpu_without_vnni():
    """The signed form's raw operands through the emulated kernel: the saturation is real
    on these inputs (what ``ort_session``'s policy protects 8-bit graphs from)."""
    f = _feeds(0)
    raw_q = (np.clip(np.rint(f["q"] / np.float32(S_Q)), -128, 127) + 128).astype(np.uint8)
    k = f["kc"][0]
    assert not np.array_equal(maddubs_matmul(raw_q[0], k), exact_matmul(raw_q[0], k))
    assert np.abs(fake_quant(f["q"], S_Q)).max() > 64 * S_Q  # q really uses 8 bits here
