"""``quantize()``: an FP export folder + its calibration cache -> a quantized export folder.

The result is a copy of the export whose ``step.onnx`` is the Q/DQ graph (``qdq_writer``,
with shift-and-sum attention expanded and, by default, fused); the other graphs are copied
unchanged. A fresh manifest lists the new sha256 of every file and records the settings
under ``extra["quant"]``, including the exact node names kept float, so a lint can check
the graph later: ``LintConfig(float_nodes=tuple(manifest.extra["quant"]["kept_float"]))``.
``derive_export`` writes the folder under a temporary name and renames it into place, so a
failure leaves nothing half-written.

    cache = load_cache("calib.json")
    quantize("out/fp", cache, QuantConfig(shift_sum=ShiftSumConfig(enabled=True)), "out/int8")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from sasq.errors import UserError
from sasq.exporter.attention_form import LONG_GRAPH, AttentionRules
from sasq.exporter.derive import derive_export
from sasq.exporter.finite_weights import check_initializers_finite
from sasq.exporter.fuse_shift_sum import fuse_shift_sum
from sasq.exporter.kv_cache import LayerScales, copy_node_names, find_cache_layers, int8_kv_cache
from sasq.exporter.manifest import CacheTensor, Manifest, verify
from sasq.exporter.qdq_config import KvCache, Precision, QuantConfig
from sasq.exporter.qdq_per_step import StepKey
from sasq.exporter.qdq_writer import QdqReport, has_kv_cache, write_qdq
from sasq.exporter.shift_sum_cache import CachePlan
from sasq.exporter.step_long import per_scale
from sasq.exporter.step_retype import float_weights, retype
from sasq.files import sha256_file
from sasq.quant.cache import CalibCache
from sasq.quant.scales import activation_scale


@dataclass
class QuantizedStep:
    """The quantized step graph, the writer's report, and the cache it carries between
    scales (empty: the FP32 cache of the source export)."""

    model: onnx.ModelProto
    report: QdqReport
    cache: list[CacheTensor] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # FP tensor -> same values here
    passes: dict[str, dict] = field(default_factory=dict)  # "fp8" / "fp16": their reports


def quantize_step(
    model: onnx.ModelProto,
    cache: CalibCache,
    cfg: QuantConfig,
    key: StepKey | None = None,
    in_place: bool = False,
    keep_cache_fp32: bool = False,
) -> QuantizedStep:
    """Linears by the Q/DQ writer, then the attention over the int8 KV cache (``key``
    finds the scale step from the cache length; needed with the int8 cache), then the
    shift-and-sum fusion where the target wants it."""
    weights = float_weights(model) if cfg.precision == Precision.FP8 else {}
    q, report = write_qdq(model, cache, cfg, key, in_place=in_place)
    out = QuantizedStep(q, report)
    if cfg.kv_cache == KvCache.INT8 and has_kv_cache(q):
        if key is None:
            raise UserError("the int8 KV cache needs a step key (the cache length per step)")
        scales, plans = cache_scales(q, cache, cfg, report)
        kv = int8_kv_cache(
            q,
            scales,
            key,
            cfg.a_bits,
            cfg.cache_bits,
            plans,
            cfg.shift_sum.prob_shift,
            cfg.attention_qdq,
            cfg.forms,
            cfg.int8_transpose,
        )
        out = QuantizedStep(kv.model, report, kv.cache, kv.aliases)
        for name in copy_node_names(kv.model):
            report.kept_float[name] = "shift-and-sum column pick (float, before Q)"
    if cfg.fused:
        out.model = fuse_shift_sum(out.model)
    return retype(out, cfg, weights, keep_cache_fp32)


def cache_scales(
    model: onnx.ModelProto, cache: CalibCache, cfg: QuantConfig, report: QdqReport
) -> tuple[dict[int, LayerScales], dict[int, CachePlan]]:
    """Per block, the static scales of q and of the K and V caches (from the ranges of
    the QK and AV products' inputs) and its shift-and-sum copies."""
    scales, plans = {}, {}
    for L in find_cache_layers(model):
        amax = {}
        for what, x in (("q", L.q), ("k", L.k_range), ("v", L.present_value)):
            r = cache.ranges.get(x)
            if r is None:
                raise UserError(f"calibration cache has no range for {x} (attention of block "
                                f"{L.index}); recalibrate")  # fmt: skip
            amax[what] = r.amax
        scales[L.index] = LayerScales(
            activation_scale(amax["q"], cfg.a_bits),
            activation_scale(amax["k"], cfg.cache_bits),
            activation_scale(amax["v"], cfg.cache_bits),
        )
        if L.av in report.cache_plans:
            plans[L.index] = report.cache_plans[L.av]
    return scales, plans


def quantize(
    onnx_dir: str | Path,
    cache: CalibCache,
    cfg: QuantConfig,
    out_dir: str | Path,
    rules: AttentionRules | None = None,
) -> Path:
    """Write the quantized copy of the export ``onnx_dir`` to ``out_dir``; return it. For
    ``--target tensorrt``, each scale's attention form follows TensorRT's fusion ``rules``
    (``attention_form``; default: ``trt_attention.json``), with ``step_long.onnx`` for the
    scales int8 attention cannot fuse.

    Refuses (``UserError``, one line) a cache made for another step graph, an export that
    fails its manifest check, and an ``out_dir`` that is the source or a non-export folder.
    """
    src, out_dir = Path(onnx_dir), Path(out_dir)
    manifest = verify(src)
    if out_dir.resolve() == src.resolve():
        raise UserError(f"{out_dir}: the quantized export must not replace its FP source")
    if manifest.extra.get("export_config", {}).get("dtype", "fp32") != "fp32":
        raise UserError(
            f"{src}: quantize the fp32 export (for an fp16 rest: `rest` fp16)", param="rest"
        )
    spec = manifest.graphs["step"]
    step_hash = sha256_file(src / spec.file)
    if cache.model_hash != step_hash:
        raise UserError(
            f"calibration cache is for another step graph (sha256 {cache.model_hash[:12]}..., "
            f"{src / spec.file} is {step_hash[:12]}...); recalibrate"
        )
    model = onnx.load(str(src / spec.file))
    check_initializers_finite(model, src / spec.file)
    # The step is found from the cache length (past_value_0 [B2, H, P, D], whose layout
    # the int8 cache keeps), unique per scale.
    key = StepKey("past_value_0", 2, tuple(s.past_len for s in manifest.scales))
    step = quantize_step(model, cache, cfg, key, in_place=True)  # loaded just for this
    q, report = step.model, step.report
    quant = {
        **cfg.to_dict(),
        "quantized": report.quantized,
        "kept_float": report.kept_float,
        "shift_sum_extra_keys": report.shift_sum,
        "tensor_aliases": step.aliases,
        **step.passes,
        "calib_settings": {
            "observer": cache.settings.observer.value,
            "num_samples": cache.settings.num_samples,
            "resample": cache.settings.resample.value,
        },
    }
    if step.cache:
        quant["kv_cache_bytes_per_image"] = cache_bytes(manifest, report)
    forms = per_scale(str(src / spec.file), manifest, cache, cfg, key, step, rules)
    more, graphs = None, None
    if forms is not None:
        quant["attention_forms"] = [f.to_dict() for f in forms.forms]
        if forms.long_model is not None:
            more, graphs = {LONG_GRAPH: forms.long_model}, forms.step_graphs
            quant["step_graphs"] = {LONG_GRAPH: {"kept_float": forms.long_kept_float}}
    return derive_export(src, q, out_dir, "quant", quant, tuple(step.cache), more, graphs)


def cache_bytes(manifest: Manifest, report: QdqReport) -> dict[str, int]:
    """Bytes of the KV cache per image (its CFG pair of rows) at the last scale, when it
    holds every token: int8 K and V, the shift-and-sum copies, and an FP32 cache."""
    d, last = manifest.dims, manifest.scales[-1]
    row = 2 * d["num_heads"] * d["head_dim"]  # one token of one block, CFG pair, int8
    kv = 2 * d["depth"] * (last.past_len + last.l) * row
    copies = sum(p.copies for p in report.cache_plans.values()) * row
    return {"int8_kv": kv, "int8_copies": copies, "fp32_kv": 4 * kv}
