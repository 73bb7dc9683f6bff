"""exporter/kv_cache.py: the int8 KV cache on the embedded default's step graph. Its I/O is
int8 (K transposed), nothing reads the whole cache through a Transpose, the ort target
transposes the new keys as int8 (the same numbers), each target lints clean; the ORT graph
computes what the PyTorch int8-cache reference computes (same tokens), the same numbers as
the earlier float-cache graph, and its shift-and-sum copies lower the cache's error where
the cache is narrow."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from int8_sessions import NO_VNNI_BACKEND

from sasq.engines.backends import make_backend
from sasq.engines.decode import generate
from sasq.engines.lint import LintConfig, lint
from sasq.engines.ort_backend import OrtBackend
from sasq.engines.torch_backend import CacheQuant, TorchBackend
from sasq.exporter.kv_cache import find_cache_layers
from sasq.exporter.manifest import load_manifest, verify
from sasq.exporter.qdq_config import KvCache, QuantConfig, ShiftSumConfig
from sasq.exporter.qdq_per_step import StepKey
from sasq.exporter.quantize import quantize, quantize_step
from sasq.metrics import sqnr_db, token_agreement
from sasq.models import load_model

FLOAT_LINEARS = ("*.weight*",)  # every linear kept float: the cache's error alone


def _key(export) -> StepKey:
    return StepKey("past_value_0", 2, tuple(s.past_len for s in load_manifest(export).scales))


def _rollout(export_or_backend, n=16, hook=None, seed=7):
    """An export runs as make_backend("ort", threads=1) would, with its int8 products
    exact on every CPU (``int8_sessions``: the kernels a CPU without VNNI gets)."""
    model = load_model()
    be = export_or_backend
    if not hasattr(be, "step"):
        be = OrtBackend(be, NO_VNNI_BACKEND)
    labels = torch.arange(n) % model.var.num_classes
    return generate(be, labels, model.var.patch_nums, model.cfg.sampling, seed,
                    model.var.num_classes, keep_logits=True, hook=hook)  # fmt: skip


def test_cache_io_is_int8_and_no_transpose_reads_the_cache(default_export, default_calib):
    fp = onnx.load(str(default_export / "step.onnx"))
    depth = len(find_cache_layers(fp))
    q = quantize_step(copy.deepcopy(fp), default_calib, QuantConfig(), _key(default_export))
    g = q.model.graph
    io = {v.name: v.type.tensor_type for v in [*g.input, *g.output]}
    for i in range(depth):
        for name in (f"past_key_{i}", f"present_key_{i}", f"past_value_{i}"):
            assert io[name].elem_type == onnx.TensorProto.INT8, name
        k = [d.dim_param or d.dim_value for d in io[f"past_key_{i}"].shape.dim]
        assert k[2] == 32 and k[3] == "P"  # [B2, H, c, P]: QK^T reads it as is
    users = {x: [n for n in g.node if x in n.input] for x in io}
    for i in range(depth):  # the cache goes to the output and one DequantizeLinear, no more
        kinds = sorted(n.op_type for n in users[f"present_key_{i}"])
        assert kinds == ["DequantizeLinear"], kinds
        mm = [n for n in g.node if n.op_type == "MatMul"
              and any(x.startswith(f"kv{i}_kread") for x in n.input)]  # fmt: skip
        assert len(mm) == 1
    assert [c.dtype for c in q.cache] == ["INT8"] * 2 * depth
    assert sum(n.op_type == "Transpose" for n in g.node) == sum(
        n.op_type == "Transpose" for n in fp.graph.node
    )  # the cache's Transpose became one of the l new keys
    trt = quantize_step(copy.deepcopy(fp), default_calib, QuantConfig(target="tensorrt"),
                        _key(default_export))  # fmt: skip
    for target, x in (("ort", q), ("tensorrt", trt)):  # each lints clean for its own rules
        cfg = LintConfig(float_nodes=x.report.float_nodes, target=target, int8_cache=True)
        assert lint(x.model, cfg) == [], target
    assert lint(fp, LintConfig(int8_cache=True, coverage="touched"))  # FP cache is flagged


def test_ort_target_transposes_the_new_keys_as_int8_with_the_same_numbers(
    default_export, default_calib, tmp_path, monkeypatch
):
    """``ort``: Q -> Transpose (int8) -> Concat; ``tensorrt``: Transpose -> Q -> Concat (its
    parser lists no INT8 Transpose). A per-tensor Q commutes with a Transpose, so the ort
    graph's rollout equals the float-Transpose form's bit for bit."""

    def store(cfg: QuantConfig) -> list[tuple[str, str]]:
        g = quantize_step(copy.deepcopy(fp), default_calib, cfg, _key(default_export)).model.graph
        made = {o: n for n in g.node for o in n.output}
        chains = []
        for i in range(len(find_cache_layers(fp))):
            new = made[made[f"present_key_{i}"].input[1]]
            chains.append((made[new.input[0]].op_type, new.op_type))
        return chains

    fp = onnx.load(str(default_export / "step.onnx"))
    depth = len(find_cache_layers(fp))
    assert store(QuantConfig()) == [("QuantizeLinear", "Transpose")] * depth
    assert store(QuantConfig(target="tensorrt")) == [("Transpose", "QuantizeLinear")] * depth
    a = quantize(default_export, default_calib, QuantConfig(), tmp_path / "int8T")
    monkeypatch.setattr(QuantConfig, "int8_transpose", property(lambda self: False))
    assert store(QuantConfig()) == [("Transpose", "QuantizeLinear")] * depth
    b = quantize(default_export, default_calib, QuantConfig(), tmp_path / "floatT")
    ra, rb = _rollout(a), _rollout(b)
    assert all(torch.equal(x, y) for x, y in zip(ra.idx, rb.idx, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(ra.logits, rb.logits, strict=True))


def test_int8_cache_keeps_the_numbers_of_the_float_cache_graph(default_export, default_calib,
                                                               tmp_path):  # fmt: skip
    """Quantizing each token once when stored gives the same values as re-quantizing the
    float cache at every step (same scales): the int8 cache costs no accuracy.

    Both graphs in the full 8-bit form: the ort target's bounded form narrows the queries
    of the int8-cache graph only (its QK^T is u8 x s8 over the cache; the float-cache
    graph's is u8 x u8, exact without it), which would compare two different roundings.
    Both run with exact integer sums on every CPU (``_rollout``: s8 x s8 for these graphs,
    as ort_session's policy opens them on a CPU without VNNI); same tolerances as before."""
    full = QuantConfig(u8s8="full")
    a = quantize(default_export, default_calib, full, tmp_path / "int8")
    b = quantize(default_export, default_calib, QuantConfig(kv_cache=KvCache.FP32, u8s8="full"),
                 tmp_path / "fp32")  # fmt: skip
    for out in (a, b):
        assert OrtBackend(out, NO_VNNI_BACKEND).int8_kernels.kernels == "s8s8"
    ra, rb = _rollout(a), _rollout(b)
    assert token_agreement(ra.idx, rb.idx) == [1.0] * len(ra.idx)
    for x, y in zip(ra.logits, rb.logits, strict=True):
        assert float((x - y).abs().max()) <= 1e-3
    quant = verify(a).extra["quant"]
    sizes = quant["kv_cache_bytes_per_image"]
    man = load_manifest(a)
    d = man.dims
    tokens = sum(pn * pn for pn in man.patch_nums)
    assert sizes["int8_kv"] == 2 * d["depth"] * tokens * 2 * d["num_heads"] * d["head_dim"]
    assert sizes["fp32_kv"] == 4 * sizes["int8_kv"]


def test_ort_int8_cache_equals_the_torch_reference(default_export, default_calib, tmp_path):
    cfg = QuantConfig(float_nodes=FLOAT_LINEARS, attention_qdq=False, kv_bits=6)
    out = quantize(default_export, default_calib, cfg, tmp_path / "cacheonly")
    assert verify(out).extra["quant"]["kept_float"]  # every linear
    ort_run = _rollout(out)
    ref = _rollout(TorchBackend(load_model(), CacheQuant.from_export(out)))
    fp = _rollout(default_export)
    assert token_agreement(ref.idx, ort_run.idx) == [1.0] * len(ref.idx)
    for si, (x, y) in enumerate(zip(ref.logits, ort_run.logits, strict=True)):
        # Equal up to float round-off (1e-5 at the first scales). Later, round-off in k and
        # v (torch's and ORT's GEMMs differ by ~1e-6) now and then tips a value across a
        # grid midpoint, which moves later logits a little (measured: at most 0.034 of 26,
        # 0.7% of them by more than 0.01).
        err = (x - y).abs()
        if si < 2:
            assert float(err.max()) <= 1e-4
        assert float((err > 1e-2).float().mean()) <= 0.01
        assert float(err.mean()) <= 2e-5 * float(x.abs().max())
    # a 6-bit cache does change the model: the reference is not the FP model
    assert any(float((x - y).abs().max()) > 1e-2 for x, y in zip(ref.logits, fp.logits,
                                                                    strict=True))  # fmt: skip


def test_backend_keeps_the_cache_int8_between_steps(default_export, default_calib, tmp_path):
    out = quantize(default_export, default_calib, QuantConfig(), tmp_path / "int8")
    be = make_backend("ort", None, out, threads=1)
    model = load_model()
    labels = torch.tensor([1, 2, 10, 10])
    be.reset(labels)
    for si, pn in enumerate(model.var.patch_nums[:3]):
        be.step(si)
        past = be._past
        assert all(p.dtype == np.int8 for p in past)
        seen = sum(p * p for p in model.var.patch_nums[: si + 1])
        assert past[0].shape[3] == seen and past[1].shape[2] == seen  # K [.., c, P], V [.., P, c]
        be.advance(si, torch.zeros(2, pn * pn, dtype=torch.long))


def _teacher_forced_sqnr(export, ref) -> float:
    got = _rollout(export, hook=lambda si, idx, logits: ref.idx[si])
    return float(np.mean([sqnr_db(a, b) for a, b in zip(ref.logits, got.logits, strict=True)]))


@pytest.mark.parametrize("mode", ["budget", "all2"])
def test_shift_sum_copies_lower_the_cache_error(default_export, default_calib, tmp_path, mode):
    """A 4-bit cache, float linears and products: with copies, the logits (teacher-forced
    on the FP tokens) are closer to FP than without; the gain survives int8 storage."""
    base = QuantConfig(float_nodes=FLOAT_LINEARS, attention_qdq=False, kv_bits=4)
    ss = ShiftSumConfig(enabled=True, mode=mode, budget=0.05, cache_budget=0.2)
    plain = quantize(default_export, default_calib, base, tmp_path / "plain")
    with_ss = quantize(default_export, default_calib, QuantConfig(**{**base.__dict__,
                       "shift_sum": ss}), tmp_path / "ss")  # fmt: skip
    man = load_manifest(with_ss)
    copies = [c for c in man.cache if c.input.startswith("past_vcopy_")]
    assert copies and all(c.dtype == "INT8" for c in copies)
    assert verify(with_ss).extra["quant"]["kv_cache_bytes_per_image"]["int8_copies"] > 0
    # Layers store different numbers of copies and each step appends some: a dim_param shared
    # by two of these tensors lets ORT reuse one buffer for both (digits32 at W6A6 failed so).
    step = onnx.load(with_ss / man.graphs["step"].file, load_external_data=False).graph
    copy_dims = [vi.type.tensor_type.shape.dim[2].dim_param
                 for vi in (*step.input, *step.output) if "_vcopy_" in vi.name]  # fmt: skip
    assert len(copy_dims) == 2 * len(copies) and len(set(copy_dims)) == len(copy_dims)
    ref = _rollout(default_export)
    gain = _teacher_forced_sqnr(with_ss, ref) - _teacher_forced_sqnr(plain, ref)
    assert gain > 0.5, gain
