"""The second step graph of a TensorRT export (``attention_form``): for the scales whose int8
attention TensorRT cannot fuse, ``step_long`` reads the same int8 (or fp8) KV cache through
its DequantizeLinear and runs both attention products in fp16; the linears stay quantized.

It is the writer's own graph with ``attention_qdq=False`` (queries and probabilities left
float over the dequantized cache) and an fp16 rest. Everything stored between steps must be
the first graph's bytes, so when that graph's rest is fp32 the cache's Q/DQ stay fp32 here
(``step_retype.cache_qdq_nodes``) and the cache records of both graphs are compared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import onnx

from sasq.errors import UserError
from sasq.exporter.attention_form import LONG_GRAPH, AttentionRules, ScaleForm, scale_forms
from sasq.exporter.manifest import Manifest
from sasq.exporter.qdq_config import KvCache, Precision, QuantConfig, RestDtype, Target
from sasq.exporter.qdq_per_step import StepKey
from sasq.quant.cache import CalibCache


@dataclass
class PerScale:
    """The attention form of every scale, and the second graph when one is needed."""

    forms: list[ScaleForm]
    long_model: onnx.ModelProto | None = None
    long_kept_float: dict[str, str] | None = None

    @property
    def step_graphs(self) -> tuple[str, ...]:
        return tuple(f.graph for f in self.forms)


def per_scale(
    fp_step: str,
    manifest: Manifest,
    cache: CalibCache,
    cfg: QuantConfig,
    key: StepKey,
    main,
    rules: AttentionRules | None = None,
) -> PerScale | None:
    """For ``--target tensorrt`` with the quantized KV cache: the forms of the scales of
    ``manifest`` (``main``, the quantized step, gives the shift-and-sum extra key columns),
    and ``step_long`` when a scale needs it; None for the other targets and forms."""
    if cfg.target != Target.TENSORRT or cfg.kv_cache != KvCache.INT8 or not cfg.attention_qdq:
        return None
    extra = [0] * len(manifest.scales)
    for cols in main.report.shift_sum.values():
        extra = [max(a, int(b)) for a, b in zip(extra, cols, strict=True)]
    forms = scale_forms(
        manifest.dims["head_dim"],
        manifest.patch_nums,
        extra,
        fp8=cfg.precision == Precision.FP8,
        rules=rules,
    )
    out = PerScale(forms)
    if all(f.graph == "step" for f in forms):
        return out
    from sasq.exporter.quantize import quantize_step  # quantize imports this module

    long_cfg = dataclasses.replace(cfg, attention_qdq=False, rest=RestDtype.FP16)
    keep = cfg.rest == RestDtype.FP32
    long = quantize_step(onnx.load(fp_step), cache, long_cfg, key, True, keep_cache_fp32=keep)
    if [dataclasses.astuple(c) for c in long.cache] != [dataclasses.astuple(c) for c in main.cache]:
        raise UserError(f"{LONG_GRAPH}: its KV cache differs from the step graph's (a bug)")
    kept = dict(long.report.kept_float)
    linears = _linears(long.model)
    for n in long.model.graph.node:  # the attention products read the cache in fp16
        if n.op_type == "MatMul" and n.name not in linears and n.name not in kept:
            kept[n.name] = "fp16 attention over the dequantized cache (step_long)"
    out.long_model, out.long_kept_float = long.model, kept
    return out


def _linears(model: onnx.ModelProto) -> set[str]:
    """The GEMMs with a quantized weight (DQ of an initializer): the linears."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    out = set()
    for n in g.node:
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1:
            p = producers.get(n.input[1])
            if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in inits:
                out.add(n.name)
    return out
