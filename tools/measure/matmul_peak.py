"""The machine's int8 GEMM peak under ONNX Runtime, at the model's own GEMM shapes.

A one-node graph per shape: x -> Q/DQ (per tensor) and int8 W -> DQ (per output channel)
-> MatMul, the layout sasq writes, against the same MatMul in fp32. Timed in the bench's
process and run, so the report can say what fraction of this peak the model's linear
layers reach (their share of the step time comes from ORT's profile of the int8 graph).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sasq.engines.ort_session import SessionConfig, make_session


@dataclass(frozen=True)
class GemmShape:
    name: str
    M: int  # rows: CFG batch x tokens of the scale
    K: int
    N: int

    @property
    def macs(self) -> int:
        return self.M * self.K * self.N


def linear_shapes(rows: int, C: int, mlp_ratio: float = 4.0) -> list[GemmShape]:
    """The per-block linears of a VAR block at ``rows`` = 2B x l tokens."""
    H = round(C * mlp_ratio)
    return [
        GemmShape("qkv", rows, C, 3 * C),
        GemmShape("proj", rows, C, C),
        GemmShape("fc1", rows, C, H),
        GemmShape("fc2", rows, H, C),
    ]


def _graph(s: GemmShape, int8: bool, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((s.K, s.N)).astype(np.float32) * 0.05
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [s.M, s.K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [s.M, s.N])
    if not int8:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        inits = [numpy_helper.from_array(w, "w")]
    else:
        # the ort target's bounded weights (64 steps): ORT's u8 x s8 kernels, exact on
        # every CPU, so the session keeps them (8-bit ones would run s8 x s8 on AVX2)
        ws = (np.abs(w).max(0) / 64).astype(np.float32)
        wq = np.clip(np.round(w / ws), -64, 64).astype(np.int8)
        inits = [
            numpy_helper.from_array(wq, "wq"),
            numpy_helper.from_array(ws, "ws"),
            numpy_helper.from_array(np.zeros(s.N, np.int8), "wz"),
            numpy_helper.from_array(np.array(4.0 / 127, np.float32), "xs"),
            numpy_helper.from_array(np.array(0, np.int8), "xz"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
            helper.make_node("MatMul", ["xd", "wd"], ["y"]),
        ]
    g = helper.make_graph(nodes, "gemm", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def time_gemm(s: GemmShape, int8: bool, threads: int, repeats: int = 20) -> float:
    """Median seconds of one MatMul (after warm-up)."""
    sc = SessionConfig.for_int8(intra_op_threads=threads)
    sess = make_session(_graph(s, int8).SerializeToString(), sc)
    x = np.random.default_rng(1).standard_normal((s.M, s.K)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_peak(shapes: list[GemmShape], threads: int = 1, repeats: int = 20) -> dict:
    """GOP/s (2 ops per MAC) of int8 and fp32 per shape, and their ratio."""
    rows = []
    for s in shapes:
        t8, t32 = time_gemm(s, True, threads, repeats), time_gemm(s, False, threads, repeats)
        rows.append(
            {
                "name": s.name,
                "M": s.M,
                "K": s.K,
                "N": s.N,
                "int8_gops": 2 * s.macs / t8 / 1e9,
                "fp32_gops": 2 * s.macs / t32 / 1e9,
                "int8_over_fp32": t32 / t8,
            }
        )
    return {"threads": threads, "shapes": rows}
