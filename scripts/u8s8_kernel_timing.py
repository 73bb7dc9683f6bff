"""Kernel-level timing of the ``ort`` target's bounded u8 x s8 form against the full 8-bit
form it replaces (issue 27), at VAR-d16's last-scale shapes: QK^T and AV over the int8
cache (2 x 16 heads, 256 queries, 680 keys, head 64) and one linear (512 x 1024 x 4096).

    python scripts/u8s8_kernel_timing.py [--threads 1] [--repeats 30]

Each product is its own small graph in both forms, run under ONNX Runtime's default
kernels; the repeats of the two forms are interleaved so load on a shared machine hits
both alike. Prints the median and the min of each, and their ratio (bounded / full).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from sasq.engines.int8_kernels import cpu_int8
from sasq.engines.ort_session import SessionConfig, make_session
from sasq.exporter.qdq_edit import GraphEdit
from sasq.exporter.qdq_writer import add_qdq
from sasq.exporter.u8s8 import SAFE_QMAX, probs_qdq, query_qdq, weight_grid

B2, H, Lq, S, D = 2, 16, 256, 680, 64
M, K, N = 512, 1024, 4096
F = TensorProto.FLOAT


def _model(inputs, output, build) -> onnx.ModelProto:
    g = helper.make_graph([], "t", inputs, [helper.make_tensor_value_info(output, F, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    e = GraphEdit(m)
    build(e)
    return e.finish()


def _dq(e: GraphEdit, x: str, s: float) -> str:
    sc, zp = e.const(f"{x}_s", np.array(s, np.float32)), e.const(f"{x}_z", np.int8(0))
    return e.node("DequantizeLinear", [x, sc, zp], f"{x}_dq")[0]


def qk(bounded: bool) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info("q", F, [B2, H, Lq, D]),
           helper.make_tensor_value_info("k", TensorProto.INT8, [B2, H, D, S])]  # fmt: skip

    def build(e):
        q = query_qdq(e, "q", 0.02, 127, "q") if bounded else add_qdq(e, "q", 0.02, "q")
        e.node_to("MatMul", [q, _dq(e, "k", 0.03)], ["y"], "qk")

    return _model(ins, "y", build)


def av(bounded: bool) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info("s", F, [B2, H, Lq, S]),
           helper.make_tensor_value_info("v", TensorProto.INT8, [B2, H, S, D])]  # fmt: skip

    def build(e):
        p = e.node("Softmax", ["s"], "softmax", axis=-1)[0]
        p = probs_qdq(e, p, 1 / 127, "p") if bounded else add_qdq(e, p, 1 / 127, "p")
        e.node_to("MatMul", [p, _dq(e, "v", 0.025)], ["y"], "av")

    return _model(ins, "y", build)


def linear(bounded: bool) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info("x", F, [M, K])]
    w = np.random.default_rng(0).normal(0, 0.03, (K, N)).astype(np.float32)
    scale = (np.abs(w).max(0) / 127).astype(np.float32)
    wq, ws = weight_grid(w, scale, SAFE_QMAX if bounded else 127, 1, 127)

    def build(e):
        x = add_qdq(e, "x", 0.03, "x")
        zp = e.const("w_z", np.zeros(N, np.int8))
        wd = e.node("DequantizeLinear", [e.const("w", wq), e.const("w_s", ws), zp], "w_dq",
                    axis=1)[0]  # fmt: skip
        e.node_to("MatMul", [x, wd], ["y"], "fc")

    return _model(ins, "y", build)


def feeds(name: str) -> dict:
    rng = np.random.default_rng(1)
    if name == "QK^T":
        return {"q": rng.normal(0, 1, (B2, H, Lq, D)).astype(np.float32),
                "k": rng.integers(-127, 128, (B2, H, D, S)).astype(np.int8)}  # fmt: skip
    if name == "AV":
        return {"s": rng.normal(0, 2, (B2, H, Lq, S)).astype(np.float32),
                "v": rng.integers(-127, 128, (B2, H, S, D)).astype(np.int8)}  # fmt: skip
    return {"x": rng.normal(0, 1, (M, K)).astype(np.float32)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    # ORT's default kernels for both forms (u8 x s8 on x86), as the auto policy runs them
    # on a CPU with VNNI; MatMulAddFusion off as in every sasq session
    sc = SessionConfig.for_int8(intra_op_threads=args.threads, int8_kernels="u8s8")
    print(f"u8 x s8 kernel: {cpu_int8().kernel}; threads {args.threads}; "
          f"{args.repeats} interleaved repeats")  # fmt: skip
    print("| product | full ms (median / min) | bounded ms (median / min) | bounded / full |")
    print("|---|---|---|---|")
    for name, make in (("QK^T", qk), ("AV", av), ("linear 512x1024x4096", linear)):
        f = feeds(name)
        sess = {b: make_session(make(b).SerializeToString(), sc) for b in (False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for s in sess.values():
            for _ in range(3):
                s.run(None, f)
        for _ in range(args.repeats):
            for b, s in sess.items():
                t0 = time.perf_counter()
                s.run(None, f)
                times[b].append(1e3 * (time.perf_counter() - t0))
        med = {b: statistics.median(t) for b, t in times.items()}
        low = {b: min(t) for b, t in times.items()}
        ratio = f"{med[True] / med[False]:.2f} (min {low[True] / low[False]:.2f})"
        print(f"| {name} | {med[False]:.2f} / {low[False]:.2f} | {med[True]:.2f} / "
              f"{low[True]:.2f} | {ratio} |")  # fmt: skip


if __name__ == "__main__":
    main()
