"""exporter/fuse_shift_sum.py: Sum of Q/DQ MatMuls -> one MatMul over concatenated keys, on a
hand-built pair of branches (op types, equality, checker, a case that must not fire) and on
the embedded default's shift-and-sum step graph (fused == expanded, one AV MatMul per layer,
no duplicated projection, lint clean)."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
from int8_sessions import exact_session
from onnx import TensorProto, helper, numpy_helper

from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.engines.lint import LintConfig, lint
from sasq.exporter.fuse_shift_sum import FuseShiftSumPass, fuse_shift_sum
from sasq.exporter.manifest import load_manifest
from sasq.exporter.qdq_config import KvCache, QuantConfig, ShiftSumConfig
from sasq.exporter.qdq_per_step import StepKey
from sasq.exporter.qdq_writer import write_qdq
from sasq.exporter.quantize import quantize_step
from sasq.quant.cache import load_cache, save_cache

H, L, D = 2, 3, 16


def branches(v_scale_2: float = 0.02, clip: bool = False) -> onnx.ModelProto:
    """out = DQ(Q(p0)) @ DQ(Q(v0)) + DQ(Q(p1)) @ DQ(Q(v1)) as a Sum (S0 and S1 keys)."""
    inits = [
        numpy_helper.from_array(np.array(1 / 127, np.float32), "sp"),
        numpy_helper.from_array(np.array(0.02, np.float32), "sv"),
        numpy_helper.from_array(np.array(v_scale_2, np.float32), "sv2"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(np.array(-31, np.int8), "lo"),
        numpy_helper.from_array(np.array(31, np.int8), "hi"),
    ]
    nodes = []

    def qdq(x: str, s: str) -> str:
        nodes.append(helper.make_node("QuantizeLinear", [x, s, "zp"], [f"{x}_q"], name=f"{x}_Q"))
        q = f"{x}_q"
        if clip:
            nodes.append(helper.make_node("Clip", [q, "lo", "hi"], [f"{x}_c"], name=f"{x}_clip"))
            q = f"{x}_c"
        nodes.append(
            helper.make_node("DequantizeLinear", [q, s, "zp"], [f"{x}_dq"], name=f"{x}_DQ")
        )
        return f"{x}_dq"

    m0 = helper.make_node("MatMul", [qdq("p0", "sp"), qdq("v0", "sv")], ["m0"], name="mm0")
    m1 = helper.make_node("MatMul", [qdq("p1", "sp"), qdq("v1", "sv2")], ["m1"], name="mm1")
    nodes += [m0, m1, helper.make_node("Sum", ["m0", "m1"], ["out"], name="av_shift_sum")]
    f = TensorProto.FLOAT
    ins = [helper.make_tensor_value_info("p0", f, [H, L, "S0"]),
           helper.make_tensor_value_info("v0", f, [H, "S0", D]),
           helper.make_tensor_value_info("p1", f, [H, L, "S1"]),
           helper.make_tensor_value_info("v1", f, [H, "S1", D])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "br", ins, [helper.make_tensor_value_info("out", f, [H, L, D])], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Every output, int8 products exact on every CPU (``int8_sessions``)."""
    return exact_session(model).run(None, feeds)


def branch_feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"p0": rng.uniform(0, 0.5, (H, L, 5)).astype(np.float32),
            "v0": rng.normal(0, 1, (H, 5, D)).astype(np.float32),
            "p1": rng.uniform(0, 0.5, (H, L, 2)).astype(np.float32),
            "v1": rng.normal(0, 1, (H, 2, D)).astype(np.float32)}  # fmt: skip


@pytest.mark.parametrize("clip", [False, True])
def test_two_branches_fuse_into_one_matmul(clip):
    model = branches(clip=clip)
    fused = fuse_shift_sum(model)
    onnx.checker.check_model(fused, full_check=True)
    ops = Counter(n.op_type for n in fused.graph.node)
    assert ops["MatMul"] == 1 and ops["Sum"] == 0 and ops["Concat"] == 2
    assert ops["QuantizeLinear"] == 2 and ops["DequantizeLinear"] == 2
    assert ops["Clip"] == (2 if clip else 0)
    cat_v = next(n for n in fused.graph.node if n.name.endswith("_cat_v"))
    assert next(a.i for a in cat_v.attribute if a.name == "axis") == -2
    f = branch_feeds()
    (a,), (b,) = run(model, f), run(fused, f)
    assert a.shape == b.shape == (H, L, D)
    assert np.abs(a - b).max() <= 1e-5
    assert np.abs(a).max() > 0.1
    if not clip:  # a Clip between Q and DQ (simulated widths) is not a TensorRT graph
        assert lint(fused) == []


def test_different_scales_do_not_fuse():
    import onnx_ir as ir

    model = ir.serde.deserialize_model(branches(v_scale_2=0.03))
    p = FuseShiftSumPass()
    assert not p(model).modified
    assert p.reasons == {
        "av_shift_sum": "branches have different scales, zero points or clip bounds"
    }


# ----- the embedded default's step graph -----


@pytest.fixture(scope="module")
def default_cache(default_export, tmp_path_factory):
    """Calibrated once per session (4 samples), shared with test_quantize via a file."""
    path = tmp_path_factory.getbasetemp() / "default_calib.json"
    if not path.is_file():
        cfg = CalibConfig(num_samples=4, batch=4, progress=False, threads=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "4 samples cover only 4 of 10 classes"
            save_cache(calibrate(default_export, cfg).cache, path)
    return load_cache(path)


def step_feeds(depth: int, P: int, l: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = {"x_BlC": rng.normal(0, 1, (4, l, 128)).astype(np.float32),
         "mod_BMC": rng.normal(0, 0.5, (4, 6 * depth + 2, 128)).astype(np.float32)}  # fmt: skip
    for i in range(depth):
        for t in ("key", "value"):
            f[f"past_{t}_{i}"] = rng.normal(0, 0.3, (4, 4, P, 32)).astype(np.float32)
    return f


def test_fused_equals_expanded_on_the_default_step(default_export, default_cache):
    man = load_manifest(default_export)
    depth = man.dims["depth"]
    fp = onnx.load(str(default_export / "step.onnx"))
    ss = ShiftSumConfig(enabled=True, fuse=False)
    fp32 = KvCache.FP32  # the float cache, re-quantized at every step
    expanded, report = write_qdq(fp, default_cache, QuantConfig(shift_sum=ss, kv_cache=fp32))
    fused = fuse_shift_sum(expanded)
    plain, _ = write_qdq(fp, default_cache, QuantConfig(kv_cache=fp32))
    assert any(sum(x) > 0 for x in report.shift_sum.values())
    for m in (expanded, fused):
        onnx.checker.check_model(m, full_check=True)
        assert lint(m, LintConfig(float_nodes=report.float_nodes)) == []
    count = {k: Counter(n.op_type for n in m.graph.node) for k, m in
             (("fp", fp), ("plain", plain), ("expanded", expanded), ("fused", fused))}  # fmt: skip
    picks = len(report.kept_float)  # the float column picks of shift-and-sum, one per layer
    assert picks == depth
    assert count["fused"]["MatMul"] - picks == count["fp"]["MatMul"] == count["plain"]["MatMul"]
    assert count["expanded"]["MatMul"] > count["fused"]["MatMul"]
    assert count["expanded"]["Sum"] == depth and count["fused"]["Sum"] == 0
    fused_av = [n for n in fused.graph.node if n.name.endswith("_fused")]
    assert len(fused_av) == depth  # one AV MatMul per layer
    qkv = [n for n in fused.graph.node if n.op_type == "MatMul" and "mat_qkv" in n.input[1]]
    assert len(qkv) == depth  # the value projection is never duplicated
    for s in man.scales:
        f = step_feeds(depth, s.past_len, s.l, seed=s.si)
        a, b, c = run(expanded, f), run(fused, f), run(plain, f)
        assert max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)) <= 1e-5
        if report.shift_sum[fused_av[0].name.removesuffix("_shift_sum_fused")][s.si]:
            assert float(np.abs(a[0] - c[0]).max()) > 1e-4  # the copies are really there


def int8_step_feeds(step: onnx.ModelProto, l: int, cache: dict, seed: int) -> dict:
    """Random tokens for the int8-cache step graph, with its cache as the previous steps
    left it (``cache``: input name -> int8 array)."""
    rng = np.random.default_rng(seed)
    mod_rows = next(i for i in step.graph.input if i.name == "mod_BMC")
    M = mod_rows.type.tensor_type.shape.dim[1].dim_value
    return {"x_BlC": rng.normal(0, 1, (4, l, 128)).astype(np.float32),
            "mod_BMC": rng.normal(0, 0.5, (4, M, 128)).astype(np.float32), **cache}  # fmt: skip


def test_int8_cache_fused_equals_two_products(default_export, default_cache):
    """With the int8 KV cache, the TensorRT target's fused AV product (the copy cache
    concatenated in int8 beside the value cache) equals the ORT target's two int8
    products, step after step as the caches grow, and lints clean for its target.

    The ORT target in its full 8-bit form, whose numbers are the TensorRT target's (the
    default bounded form narrows weights and queries for ORT's u8 x s8 kernels: other
    numbers, test_u8s8). Both graphs can saturate u8 x s8, so both run as s8 x s8 (what
    ort_session opens for them on a CPU without VNNI): exact integer sums on every CPU, so
    the 1e-4 and byte-for-byte checks hold anywhere. Same tolerances as before."""
    import copy

    man = load_manifest(default_export)
    depth = man.dims["depth"]
    fp = onnx.load(str(default_export / "step.onnx"))
    key = StepKey("past_value_0", 2, tuple(s.past_len for s in man.scales))
    ss = ShiftSumConfig(enabled=True)
    ort_cfg = QuantConfig(shift_sum=ss, u8s8="full")
    ort_q = quantize_step(copy.deepcopy(fp), default_cache, ort_cfg, key)
    trt_q = quantize_step(fp, default_cache, QuantConfig(shift_sum=ss, target="tensorrt"), key)
    assert sum(p.copies for p in ort_q.report.cache_plans.values()) > 0
    counts = {k: Counter(n.op_type for n in q.model.graph.node)
              for k, q in (("ort", ort_q), ("trt", trt_q))}  # fmt: skip
    assert counts["ort"]["Sum"] > 0 and counts["trt"]["Sum"] == 0
    assert counts["ort"]["MatMul"] - counts["trt"]["MatMul"] == counts["ort"]["Sum"]
    for q, target in ((ort_q, "ort"), (trt_q, "tensorrt")):
        onnx.checker.check_model(q.model, full_check=True)
        cfg = LintConfig(float_nodes=q.report.float_nodes, target=target, int8_cache=True)
        assert lint(q.model, cfg) == []
    caches = {
        k: {c.input: np.zeros(c.shape_at(0, 4), np.int8) for c in q.cache}
        for k, q in (("ort", ort_q), ("trt", trt_q))
    }
    for s in man.scales:
        outs = {}
        for k, q in (("ort", ort_q), ("trt", trt_q)):
            f = int8_step_feeds(q.model, s.l, caches[k], seed=s.si)
            names = ["logits", *(c.output for c in q.cache)]
            sess = exact_session(q.model, bounded=False)
            got = dict(zip(names, sess.run(names, f), strict=True))
            caches[k] = {c.input: got[c.output] for c in q.cache}
            outs[k] = got
        assert np.abs(outs["ort"]["logits"] - outs["trt"]["logits"]).max() <= 1e-4
        for c in ort_q.cache:  # the same int8 caches, byte for byte
            assert np.array_equal(outs["ort"][c.output], outs["trt"][c.output]), c.output
        assert all(v.dtype == np.int8 for v in caches["ort"].values())
    assert depth == sum(1 for c in ort_q.cache if c.input.startswith("past_key_"))
