"""The roofline: the GEMMs of a scale, the bound each takes, the join with measured times,
and the bench's roofline section on the embedded default model."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

import sasq.models as M
from sasq.engines.backends import parse_spec
from sasq.engines.int8_graph import int8_products
from sasq.tools.measure import roofline as rl
from sasq.tools.measure.bandwidth import memory_bandwidth
from sasq.tools.measure.matmul_peak import (
    GemmShape,
    _feeds,
    _graph,
    kernel_ms,
    kernel_ms_per_run,
    max_rel_error,
    model_kernel_ms,
    nbits_graph,
)

# patch_nums (1, 2, 4), depth 2, 4 heads, C 64 (head_dim 16), vocabulary 100, MLP ratio 4
ARCH = rl.Arch(patch_nums=(1, 2, 4), depth=2, heads=4, C=64, V=100, mlp_ratio=4.0)


def flat_rates(arch: rl.Arch, batches, gops: float, gbps: float) -> rl.Rates:
    """Every shape at ``gops`` GOP/s in both precisions: kernel ms = 2 MACs / rate."""
    shapes = {g.shape for B in batches for si in range(len(arch.patch_nums))
              for g in rl.scale_gemms(arch, si, B)}  # fmt: skip
    table = {(p, s): 2 * s.macs / (gops * 1e9) * 1e3 for p in rl.PRECISIONS for s in shapes}
    return rl.Rates(gbps, table)


def test_the_gemms_of_a_scale_by_hand():
    # scale 2 at B = 3: rows 6, l = 16 tokens, past 1 + 4 = 5, so S = 21 keys;
    # attention runs per row and head: 6 x 4 = 24 products
    gemms = {g.shape.name: g for g in rl.scale_gemms(ARCH, 2, 3)}
    assert list(gemms) == ["qkv", "proj", "fc1", "fc2", "head", "qk", "av"]
    assert {n: g.macs for n, g in gemms.items()} == {
        "qkv": 2 * 96 * 64 * 192,  # depth x (6 x 16 rows) x C x 3C
        "proj": 2 * 96 * 64 * 64,
        "fc1": 2 * 96 * 64 * 256,  # C -> 4C
        "fc2": 2 * 96 * 256 * 64,
        "head": 1 * 96 * 64 * 100,  # once, not per block
        "qk": 2 * 24 * 16 * 16 * 21,  # depth x 24 x (l x d) @ (d x S)
        "av": 2 * 24 * 16 * 21 * 16,  # depth x 24 x (l x S) @ (S x d)
    }
    assert gemms["qk"].shape == GemmShape("qk", 16, 16, 21, batch=24, weight=False)
    # streamed elements: a linear's weights once per block, attention's K / V cache
    assert gemms["qkv"].streamed == 2 * 64 * 192 and gemms["head"].streamed == 64 * 100
    assert gemms["av"].streamed == 2 * 24 * 21 * 16
    # the first scale: one token, one key
    first = {g.shape.name: g.shape for g in rl.scale_gemms(ARCH, 0, 1)}
    assert first["qkv"] == GemmShape("qkv", 2, 64, 192) and first["qk"].N == 1


def test_arch_from_a_model_config_and_from_a_manifest():
    cfg = M.tiny_default()
    arch = rl.Arch.of(cfg)
    assert arch == rl.Arch((1, 2, 3, 4), 4, 4, 128, 512, 4.0)
    manifest = SimpleNamespace(
        patch_nums=(1, 2, 3, 4),
        dims={"depth": 4, "num_heads": 4, "embed_dim": 128, "vocab_size": 512},
        model_config={"var": {"mlp_ratio": 4.0}},
    )
    assert rl.Arch.of(manifest) == arch


def test_a_gemv_over_big_weights_is_memory_bound_a_large_gemm_compute_bound():
    # 100 GOP/s and 10 GB/s: 64 Mi int8 weights take 6.7 ms to read
    gemv, gemm = GemmShape("fc1", 2, 4096, 16384), GemmShape("fc1", 4096, 4096, 16384)
    rates = rl.Rates(10.0, {("int8", s): 2 * s.macs / 1e11 * 1e3 for s in (gemv, gemm)}
                     | {("fp32", gemv): 2 * gemv.macs / 1e11 * 1e3})  # fmt: skip
    v = rl.gemm_limit(rl.Gemm(gemv, 1), "int8", rates)
    assert v.bound == "memory" and v.memory_ms == pytest.approx(4096 * 16384 / 1e7)
    assert v.compute_ms == pytest.approx(2 * 2 * 4096 * 16384 / 1e8) and v.limit_ms == v.memory_ms
    g = rl.gemm_limit(rl.Gemm(gemm, 3), "int8", rates)  # x3: three blocks
    assert g.bound == "compute" and g.limit_ms == pytest.approx(3 * 2 * 4096**2 * 16384 / 1e8)
    # fp32 reads 4 bytes a weight
    assert rl.gemm_limit(rl.Gemm(gemv, 1), "fp32", rates).memory_ms == pytest.approx(
        4 * v.memory_ms
    )


def test_image_limit_sums_its_scales_and_picks_the_larger_bound():
    # slow compute, fast memory: every scale compute-bound; the reverse: memory-bound
    fast_mem = rl.image_limit(ARCH, 1, "int8", flat_rates(ARCH, [1], gops=1, gbps=1e6))
    assert [s.bound for s in fast_mem] == ["compute"] * 3
    s2 = fast_mem[2]
    assert s2.limit_ms == pytest.approx(
        sum(2 * g.macs / 1e9 * 1e3 for g in rl.scale_gemms(ARCH, 2, 1))
    )
    slow_mem = rl.image_limit(ARCH, 1, "fp32", flat_rates(ARCH, [1], gops=1e6, gbps=1e-3))
    assert [s.bound for s in slow_mem] == ["memory"] * 3
    assert slow_mem[0].memory_bound_ms == slow_mem[0].limit_ms
    # scale 0 streams its weights (per block 3C^2 + C^2 + 8C^2, the head C x V) and caches
    weights = 2 * 12 * 64 * 64 + 64 * 100
    cache = 2 * 2 * (2 * 4) * 16 * 1  # depth x (K, V) x (rows x heads) x d x S
    assert slow_mem[0].limit_ms == pytest.approx(4 * (weights + cache) / 1e6 * 1e3)
    d = s2.as_dict()
    assert d["limit_ms"] == s2.limit_ms and [g["name"] for g in d["gemms"]][-2:] == ["qk", "av"]


def test_join_ratios_and_host_time():
    scales = rl.image_limit(ARCH, 1, "int8", flat_rates(ARCH, [1], gops=10, gbps=10))
    limits = [s.limit_ms for s in scales]
    step_ms, e2e = [1.0, 2.0, 4.0], 10.0
    j = rl.join(scales, step_ms, e2e, "int8")
    assert j["limit_ms"] == pytest.approx(sum(limits)) and j["precision"] == "int8"
    assert j["host_ms"] == pytest.approx(3.0)  # 10 - (1 + 2 + 4)
    assert j["e2e_over_limit"] == pytest.approx(10.0 / sum(limits))
    assert j["steps_over_limit"] == pytest.approx(7.0 / sum(limits))
    assert [r["ratio"] for r in j["scales"]] == pytest.approx(
        [a / b for a, b in zip(step_ms, limits, strict=True)]
    )
    assert [r["pn"] for r in j["scales"]] == [1, 2, 4]
    alone = rl.join(scales, step_ms, None, "int8")  # a profile: the step graph only
    assert alone["e2e_over_limit"] is None and alone["host_ms"] is None


def test_bench_roofline_on_a_synthetic_bench_result():
    runs = [
        {"batch": B, "backends": {
            "torch": {"step_ms_median": [1.0, 2.0, 3.0], "e2e_ms_median": 8.0 * B},
            "int8": {"step_ms_median": [0.5, 1.0, 1.5], "e2e_ms_median": 4.0 * B},
            "trt": {"step_ms_median": [0.1, 0.1, 0.1], "e2e_ms_median": 1.0},
        }}
        for B in (1, 2)
    ]  # fmt: skip
    rates = flat_rates(ARCH, [1, 2], gops=5, gbps=20)
    precisions = {"torch": "fp32", "int8": "int8", "trt": None}  # trt: a GPU row
    record = rl.bench_roofline(ARCH, precisions, runs, 1, rates)
    for run in runs:
        roof = run["roofline"]
        assert set(roof) == {"torch", "int8"}
        assert roof["int8"]["host_ms"] == pytest.approx(4.0 * run["batch"] - 3.0)
        want = sum(s.limit_ms for s in rl.image_limit(ARCH, run["batch"], "fp32", rates))
        assert roof["torch"]["limit_ms"] == pytest.approx(want)
    # the numbers it rests on, for re-deriving the limits
    assert record["bandwidth_gbps"] == 20 and record["bytes_per_element"] == rl.BYTES
    g = record["gemms"][0]
    assert g["gops"] == pytest.approx(5.0) and {"M", "K", "N", "batch", "precision"} <= set(g)
    text = "\n".join(rl.markdown(runs[1]["roofline"]))
    assert "| backend | precision | limit ms |" in text and "| int8 | int8 |" in text
    assert "int8 step / limit" in text and text.count("\n| 2 | 4 |") == 1


def test_row_precision():
    assert rl.row_precision(parse_spec("torch")) == "fp32"
    assert rl.row_precision(parse_spec("trt=x,y.plan")) is None  # the CPU's limit: no GPU row
    assert rl.precision_of({"quant": {}}) == rl.precision_of({"peer": {}}) == "int8"
    assert rl.precision_of({"export_config": {}}) == "fp32"


def test_int8_attention_runs_as_an_integer_gemm_with_7_bit_operands():
    s = GemmShape("av", 4, 21, 16, batch=8, weight=False)
    (p,) = int8_products(_graph(s, int8=True).SerializeToString(), ("MatMulAddFusion",))
    assert p.op_type == "MatMulIntegerToFloat"


def test_nbits_is_ort_own_weight_only_kernel_and_rounds_as_its_bits_say():
    """scripts/nbits_vs_int8.py times these against the int8 form: they must be ORT's
    MatMulNBits, and 8-bit blocks must round far less than 4-bit ones. Accuracy level 0
    (fp32 compute on the dequantized blocks): the rounding is the weights' alone, whatever
    int8 kernels this CPU has (level 4's int8 products differ between AVX2 and VNNI)."""
    s = GemmShape("fc1", 4, 256, 512)
    err = {}
    for bits in (4, 8):
        m = nbits_graph(s, bits, accuracy_level=0)
        assert [n.op_type for n in m.graph.node] == ["MatMulNBits"]
        err[bits] = max_rel_error(m, s)
        assert model_kernel_ms(m, _feeds(s, False), 1, repeats=3) > 0
    assert max_rel_error(_graph(s, False), s) == 0.0  # the fp32 graph against itself
    # 4-bit symmetric blocks of 32: a step of max/7 per block; 8-bit: max/127
    assert 0.01 < err[4] < 0.2 and err[8] < 0.02 and err[8] < err[4] / 4
    with pytest.raises(ValueError, match="constant weight"):
        nbits_graph(GemmShape("av", 4, 21, 16, batch=8, weight=False), 8, 4)


def test_kernel_time_and_bandwidth_are_measured():
    t0 = time.perf_counter()
    profile = [
        {"cat": "Session", "name": "model_run", "ts": 100, "dur": 50},
        {"cat": "Node", "name": "a_kernel_time", "ts": 110, "dur": 7},
        {"cat": "Node", "name": "b_kernel_time", "ts": 120, "dur": 20},
        {"cat": "Node", "name": "c_fence_before", "ts": 120, "dur": 20},
        {"cat": "Session", "name": "model_run", "ts": 10, "dur": 50},
        {"cat": "Node", "name": "a_kernel_time", "ts": 20, "dur": 3},
    ]
    assert kernel_ms_per_run(profile) == [0.003, 0.027]  # in time order
    big = GemmShape("fc1", 64, 512, 2048)
    assert kernel_ms(big, True, 1, repeats=3) > 0 and kernel_ms(big, False, 1, repeats=3) > 0
    bw = memory_bandwidth(1, repeats=2, nbytes=32 << 20)
    assert bw["gbps"] == max(bw["read_gbps"], bw["copy_gbps"]) > 0.1
    assert time.perf_counter() - t0 < 20


def test_bench_json_carries_the_roofline_of_every_row(tmp_path):
    """The embedded default model, torch only (no export to wait for): every row's limit,
    each scale's, and what they rest on, in bench.json and bench.md."""
    from sasq.tools.measure.bench import run_bench, write_report
    from sasq.tools.measure.config import BenchConfig

    cfg = BenchConfig(backends=("torch",), batch_sizes=(1,), repeats=1, threads=1,
                      gemm_peak=False)  # fmt: skip
    t0 = time.perf_counter()
    res = run_bench(M.load_model(), None, cfg)
    js, md, _ = write_report(res, tmp_path)
    seconds = time.perf_counter() - t0
    roof = json.loads(js.read_text())["runs"][0]["roofline"]
    assert set(roof) == {"torch"}
    r = roof["torch"]
    assert r["precision"] == "fp32" and r["limit_ms"] > 0
    # A step does its GEMMs and more (norms, softmax, torch's per-op overhead, which at
    # C = 128 is most of it): several times its limit here. The limit counts ORT's
    # kernel time only (no session overhead), truncated to whole microseconds, so noise
    # pushes it down, never above the time: >= 1 holds on a busy machine.
    assert r["e2e_over_limit"] >= 1 and all(s["ratio"] >= 1 for s in r["scales"])
    assert r["host_ms"] == pytest.approx(r["e2e_ms"] - r["steps_ms"])
    assert [s["pn"] for s in r["scales"]] == [1, 2, 3, 4]
    assert {s["bound"] for s in r["scales"]} <= {"memory", "compute"}
    rates = json.loads(js.read_text())["roofline"]
    assert rates["bandwidth_gbps"] > 0 and len(rates["gemms"]) == 4 * 7  # fp32 shapes only
    assert all(g["kernel_ms"] >= 0 for g in rates["gemms"])
    assert "against the machine's limit" in md.read_text()
    assert seconds < 30, seconds
    off = run_bench(M.load_model(), None, BenchConfig(backends=("torch",), batch_sizes=(1,),
                    repeats=1, threads=1, gemm_peak=False, roofline=False))  # fmt: skip
    assert off["roofline"] is None and "roofline" not in off["runs"][0]


def test_cli_flags():
    from sasq.tools.cli.entry import build_parser

    p = build_parser()
    assert p.parse_args(["bench"]).roofline is True
    assert p.parse_args(["bench", "--no-roofline"]).roofline is False
    assert p.parse_args(["profile", "--onnx", "x"]).roofline is False
    assert p.parse_args(["profile", "--onnx", "x", "--roofline"]).roofline is True


@pytest.mark.slow  # an int8 export: calibration and quantization first
def test_bench_int8_row_and_profile_roofline(shared, tmp_path):
    from sasq.tools.measure.bench import run_bench
    from sasq.tools.measure.config import BenchConfig, ProfileConfig
    from sasq.tools.measure.op_profile import profile_export, to_markdown

    fp, _, int8, _ = shared
    cfg = BenchConfig(backends=("torch", "ort", f"int8={int8}"), batch_sizes=(1,),
                      repeats=1, threads=1, gemm_peak=False)  # fmt: skip
    res = run_bench(M.load_model(), fp, cfg)
    roof = res["runs"][0]["roofline"]
    assert {k: v["precision"] for k, v in roof.items()} == {
        "torch": "fp32", "ort": "fp32", "int8": "int8"}  # fmt: skip
    assert roof["torch"]["limit_ms"] == roof["ort"]["limit_ms"] != roof["int8"]["limit_ms"]
    assert {g["precision"] for g in res["roofline"]["gemms"]} == {"int8", "fp32"}
    prof = profile_export(int8, ProfileConfig(batch=1, threads=1, repeats=1, roofline=True))
    assert prof["roofline"]["precision"] == "int8" and prof["roofline"]["host_ms"] is None
    assert np.isclose(prof["roofline"]["steps_ms"], sum(prof["step_wall_ms"]))
    assert "| step | int8 |" in to_markdown(prof)
