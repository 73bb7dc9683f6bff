"""Tiny, clean int8 Q/DQ ONNX graphs laid out the way TensorRT's explicit quantization wants:
signed int8, zero point 0, activations per tensor, weights per output channel, Q/DQ on both
inputs of every quantized matmul, softmax output at scale 1/127.

Tests copy one, seed exactly one defect, and check what notices it. Names are stable so a
test can find a tensor or node to break (`x_scale`, `w_scale`, `q_scale`, `p_scale` ...).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9  # what onnxruntime 1.2x-1.3x reads
ACT_RANGE = 3.0  # test inputs are clipped to +-ACT_RANGE; activation scales assume it


def init(name: str, value: np.ndarray | float | int, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def qdq(x: str, scale: str, zp: str, tag: str) -> list[onnx.NodeProto]:
    """x -> QuantizeLinear -> DequantizeLinear -> f"{x}_dq" (per tensor)."""
    return [
        helper.make_node("QuantizeLinear", [x, scale, zp], [f"{x}_q"], name=f"{tag}/Q"),
        helper.make_node("DequantizeLinear", [f"{x}_q", scale, zp], [f"{x}_dq"], name=f"{tag}/DQ"),
    ]


def make_model(nodes, inputs, outputs, inits, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "qdq", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=IR_VERSION)  # fmt: skip


def linear(M: int = 4, K: int = 32, N: int = 24, gemm_transB: bool = False,
           seed: int = 0) -> onnx.ModelProto:  # fmt: skip
    """y = DQ(Q(x)) @ DQ(W_int8) + b. MatMul with W [K, N] per-channel on axis 1, or Gemm
    (transB=1) with W [N, K] per-channel on axis 0."""
    rng = np.random.default_rng(seed)
    w_KN = rng.standard_normal((K, N)).astype(np.float32) / np.sqrt(K)
    w_scale_N = np.abs(w_KN).max(axis=0) / 127.0
    w_int8_KN = np.clip(np.rint(w_KN / w_scale_N), -127, 127).astype(np.int8)
    w_stored = w_int8_KN.T.copy() if gemm_transB else w_int8_KN
    axis = 0 if gemm_transB else 1
    inits = [
        init("x_scale", ACT_RANGE / 127.0), init("x_zp", 0, np.int8),
        init("W", w_stored, np.int8), init("w_scale", w_scale_N),
        init("w_zp", np.zeros(N), np.int8),
        init("b", rng.standard_normal(N) * 0.1),
    ]  # fmt: skip
    nodes = [
        *qdq("x", "x_scale", "x_zp", "fc/x"),
        helper.make_node(
            "DequantizeLinear", ["W", "w_scale", "w_zp"], ["W_dq"], axis=axis, name="fc/W/DQ"
        ),  # fmt: skip
    ]
    if gemm_transB:
        nodes.append(
            helper.make_node("Gemm", ["x_dq", "W_dq", "b"], ["y"], transB=1, name="fc/Gemm")
        )
    else:
        nodes += [helper.make_node("MatMul", ["x_dq", "W_dq"], ["xw"], name="fc/MatMul"),
                  helper.make_node("Add", ["xw", "b"], ["y"], name="fc/Add")]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])
    return make_model(nodes, [x], [y], inits)


def attention(H: int = 2, S: int = 16, D: int = 16) -> onnx.ModelProto:
    """out = DQ(Q(softmax(DQ(Q(q / sqrt(D))) @ DQ(Q(k))^T))) @ DQ(Q(v)): the explicit
    MatMul -> Softmax -> MatMul block, scale on the query side, probabilities at 1/127."""
    q_scale = ACT_RANGE / np.sqrt(D) / 127.0
    inits = [
        init("inv_sqrt_d", 1.0 / np.sqrt(D)), init("zp", 0, np.int8),
        init("q_scale", q_scale), init("k_scale", ACT_RANGE / 127.0),
        init("v_scale", ACT_RANGE / 127.0), init("p_scale", 1.0 / 127.0),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Mul", ["q", "inv_sqrt_d"], ["qs"], name="attn/scale"),
        *qdq("qs", "q_scale", "zp", "attn/q"),
        *qdq("k", "k_scale", "zp", "attn/k"),
        helper.make_node("Transpose", ["k_dq"], ["kT"], perm=[0, 2, 1], name="attn/kT"),
        helper.make_node("MatMul", ["qs_dq", "kT"], ["logits"], name="attn/QK"),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1, name="attn/Softmax"),
        *qdq("p", "p_scale", "zp", "attn/p"),
        *qdq("v", "v_scale", "zp", "attn/v"),
        helper.make_node("MatMul", ["p_dq", "v_dq"], ["out"], name="attn/AV"),
    ]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [H, S, D]) for n in "qkv"]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [H, S, D])
    return make_model(nodes, ins, [out], inits)


def fake_quant(x: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """numpy Q -> DQ (int8, zero point 0, round half to even) as ONNX defines it."""
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)
