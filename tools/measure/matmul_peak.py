"""The machine's int8 GEMM peak under ONNX Runtime, at the model's own GEMM shapes.

A one-node graph per shape: x -> Q/DQ (per tensor) and int8 W -> DQ (per output channel)
-> MatMul, the layout sasq writes, against the same MatMul in fp32. Timed in the bench's
process and run, so the report can say what fraction of this peak the model's linear
layers reach (their share of the step time comes from ORT's profile of the int8 graph).

A shape with ``weight=False`` is an attention product: a batched MatMul
(batch, M, K) @ (batch, K, N) whose right operand is fed at every call (the KV cache), as
an int8 input -> DQ (per tensor) in the int8 form. Every int8 operand is bounded to 7 bits
(64 steps), so ORT's u8 x s8 kernels are exact on every CPU and the session runs them.

``nbits_graph`` is the weight-only alternative for a linear: ORT's ``MatMulNBits`` (4- or
8-bit blocked weights), timed the same way (``scripts/nbits_vs_int8.py``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sasq.engines.ort_session import SessionConfig, make_session


@dataclass(frozen=True)
class GemmShape:
    name: str
    M: int  # rows: CFG batch x tokens of the scale (per row-head for attention)
    K: int
    N: int
    batch: int = 1  # independent products in one call (attention: rows x heads)
    weight: bool = True  # the K x N operand is a constant weight; else fed per call

    @property
    def macs(self) -> int:
        return self.batch * self.M * self.K * self.N


def linear_shapes(rows: int, C: int, mlp_ratio: float = 4.0) -> list[GemmShape]:
    """The per-block linears of a VAR block at ``rows`` = 2B x l tokens."""
    H = round(C * mlp_ratio)
    return [
        GemmShape("qkv", rows, C, 3 * C),
        GemmShape("proj", rows, C, C),
        GemmShape("fc1", rows, C, H),
        GemmShape("fc2", rows, H, C),
    ]


def _dims(s: GemmShape, rows: int, cols: int) -> list[int]:
    return [rows, cols] if s.weight else [s.batch, rows, cols]


def _graph(s: GemmShape, int8: bool, seed: int = 0) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, _dims(s, s.M, s.K))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, _dims(s, s.M, s.N))
    inputs, inits = [x], []
    if not s.weight:  # attention: the right operand is an input (int8 in the int8 form)
        dtype = TensorProto.INT8 if int8 else TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info("w", dtype, _dims(s, s.K, s.N)))
    if not int8:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        if s.weight:
            w = np.random.default_rng(seed).standard_normal((s.K, s.N)).astype(np.float32)
            inits = [numpy_helper.from_array(w * 0.05, "w")]
        return _model(nodes, inputs, y, inits)
    if s.weight:
        # the ort target's bounded weights (64 steps): ORT's u8 x s8 kernels, exact on
        # every CPU, so the session keeps them (8-bit ones would run s8 x s8 on AVX2)
        w = np.random.default_rng(seed).standard_normal((s.K, s.N)).astype(np.float32) * 0.05
        ws = (np.abs(w).max(0) / 64).astype(np.float32)
        wq = np.clip(np.round(w / ws), -64, 64).astype(np.int8)
        inits = [
            numpy_helper.from_array(wq, "wq"),
            numpy_helper.from_array(ws, "ws"),
            numpy_helper.from_array(np.zeros(s.N, np.int8), "wz"),
        ]
        w_dq = helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1)
    else:
        inits = [numpy_helper.from_array(np.array(1 / 64, np.float32), "ws")]
        w_dq = helper.make_node("DequantizeLinear", ["w", "ws", "xz"], ["wd"])
    inits += [
        numpy_helper.from_array(np.array(4.0 / 127, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        w_dq,
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    return _model(nodes, inputs, y, inits)


def _model(nodes, inputs, y, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "gemm", inputs, [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _feeds(s: GemmShape, int8: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal(_dims(s, s.M, s.K)).astype(np.float32)}
    if not s.weight:
        shape = _dims(s, s.K, s.N)
        w = rng.integers(-64, 65, shape, dtype=np.int8)
        feeds["w"] = w if int8 else w.astype(np.float32) / 64
    return feeds


def _session_config(threads: int, **fields) -> SessionConfig:
    # u8s8: every int8 operand here is bounded to 7 bits, so the kernel is exact anyway;
    # asked for by name because an int8 graph input (attention) could hold any value
    return SessionConfig.for_int8(intra_op_threads=threads, int8_kernels="u8s8", **fields)


def time_gemm(s: GemmShape, int8: bool, threads: int, repeats: int = 20) -> float:
    """Median seconds of one MatMul (after warm-up)."""
    sess = make_session(_graph(s, int8).SerializeToString(), _session_config(threads))
    feeds = _feeds(s, int8)
    for _ in range(3):
        sess.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def nbits_graph(s: GemmShape, bits: int, accuracy_level: int, block: int = 32) -> onnx.ModelProto:
    """``s``'s fp32 graph with its weight quantized by ONNX Runtime's own
    ``MatMulNBitsQuantizer``: one ``MatMulNBits`` node (``bits``-bit symmetric blocks of
    ``block`` along K; ``accuracy_level`` 4 computes with int8 activations, 0 in fp32)."""
    if not s.weight:
        raise ValueError(f"{s.name}: MatMulNBits takes a constant weight, not an attention product")
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    cfg = DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=True, accuracy_level=accuracy_level, bits=bits
    )
    q = MatMulNBitsQuantizer(_graph(s, False), algo_config=cfg)
    q.process()
    return q.model.model


def max_rel_error(model: onnx.ModelProto, s: GemmShape, threads: int = 1) -> float:
    """Largest deviation of ``model``'s output (a form of ``s``'s weight GEMM, e.g.
    ``nbits_graph``) from ``s``'s fp32 graph on the same inputs, over the largest output."""
    feeds = _feeds(s, False)
    ref = make_session(_graph(s, False).SerializeToString(), _session_config(threads))
    got = make_session(model.SerializeToString(), _session_config(threads))
    y_ref, y = ref.run(None, feeds)[0], got.run(None, feeds)[0]
    return float(np.abs(y - y_ref).max() / np.abs(y_ref).max())


def kernel_ms(
    s: GemmShape, int8: bool, threads: int, repeats: int = 10, budget_s: float = 0.5
) -> float:
    """Least ms of ORT's kernels for one call of ``s`` (int8: the activation's
    QuantizeLinear and the integer MatMul), from ORT's profiler: the session's own overhead
    per run is left out, as the model's step graph pays it once for all its nodes. At least
    3 and at most ``repeats`` profiled runs after 2 warm-up runs, stopping once they took
    ``budget_s``. ORT records whole microseconds (truncated), so a kernel under 1 us reads 0
    and a sum of them is a little low: on the side of a limit that stays below the truth.
    The least, not the median, of the runs: a limit is the machine's best, and a shared
    machine's noise only ever adds time (medians moved one shape's limit 2.4x between two
    runs of the d16 bench)."""
    return model_kernel_ms(_graph(s, int8), _feeds(s, int8), threads, repeats, budget_s)


def model_kernel_ms(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    threads: int,
    repeats: int = 10,
    budget_s: float = 0.5,
) -> float:
    """``kernel_ms`` of any one-GEMM graph (e.g. ``nbits_graph``)."""
    with tempfile.TemporaryDirectory() as tmp:
        sc = _session_config(threads, enable_profiling=True, profile_prefix=str(Path(tmp) / "p"))
        sess = make_session(model.SerializeToString(), sc)
        for _ in range(2):
            sess.run(None, feeds)
        t_start, n = time.perf_counter(), 0
        while n < repeats and (n < 3 or time.perf_counter() - t_start < budget_s):
            sess.run(None, feeds)
            n += 1
        events = json.loads(Path(sess.end_profiling()).read_text())
    return min(kernel_ms_per_run(events)[-n:])


def kernel_ms_per_run(events: list[dict]) -> list[float]:
    """Sum of the kernel times (ms) inside each ``model_run`` of an ORT profile, in order."""
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    kernels = [
        e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
    ]
    return [
        sum(k["dur"] for k in kernels if r["ts"] <= k["ts"] <= r["ts"] + r["dur"]) / 1e3
        for r in runs
    ]


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
