"""The quantized step's types after the Q/DQ writer: FP8 E4M3 (``fp8.py``) and the fp16 rest
(``fp16_pass.py``), with the cache records (dtype, the scale the graph now uses) to match."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from sasq.exporter.fp8 import E4M3_MAX, to_fp8
from sasq.exporter.fp16_pass import FP16_MIN_NORMAL, Fp16Config, to_fp16
from sasq.exporter.qdq_config import Precision, QuantConfig, RestDtype


def float_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The float initializers of rank >= 2 (the weights FP8 re-quantizes), copied out before
    the Q/DQ writer replaces them with int8."""
    return {
        t.name: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.data_type == TensorProto.FLOAT and len(t.dims) >= 2
    }


def _fp16_scale(s: float | None) -> float | None:
    """The scale an fp16 rest stores: fp16-rounded, unless kept fp32 (subnormal in fp16)."""
    if s is None or s < FP16_MIN_NORMAL:
        return s
    return float(np.float16(s))


def cache_qdq_nodes(model: onnx.ModelProto) -> tuple[str, ...]:
    """Every Q/DQ of the quantized KV cache: those next to a cache input/output (or to a
    Concat appending to one), and every other Q/DQ sharing their scales (the fused AV's
    re-quantization). Kept fp32 when a second step graph must store and read the very same
    bytes as a first one whose rest is fp32."""
    g = model.graph
    quantized = (TensorProto.INT8, TensorProto.FLOAT8E4M3FN)
    near = {v.name for v in [*g.input, *g.output] if v.type.tensor_type.elem_type in quantized}
    for n in g.node:
        if n.op_type == "Concat" and near & {*n.input, *n.output}:
            near |= {*n.input, *n.output}
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    scales = {n.input[1] for n in qdq if n.input[0] in near or n.output[0] in near}
    return tuple(n.name for n in qdq if n.input[1] in scales)


def retype(step, cfg: QuantConfig, weights: dict[str, np.ndarray], keep_cache_fp32: bool = False):
    """``step`` (a ``quantize.QuantizedStep``) in ``cfg.precision`` and ``cfg.rest``; each
    pass's report under ``step.passes``. ``keep_cache_fp32``: with an fp16 rest, the KV
    cache's Q/DQ stay fp32 (``cache_qdq_nodes``), its scales exactly as calibrated."""
    if cfg.precision == Precision.FP8:
        qmax = 2 ** (cfg.a_bits - 1) - 1
        step.model, rep = to_fp8(step.model, weights, qmax)
        step.passes["fp8"] = rep.to_dict()
        ratio = np.float32(qmax / E4M3_MAX)  # as fp8.py rescales each Q/DQ scale
        step.cache = [
            dataclasses.replace(c, dtype="FLOAT8E4M3FN", scale=float(np.float32(c.scale) * ratio))
            for c in step.cache
        ]
    if cfg.rest == RestDtype.FP16:
        keep = cache_qdq_nodes(step.model) if keep_cache_fp32 else ()
        step.model, rep = to_fp16(step.model, Fp16Config(keep_fp32_nodes=keep))
        step.passes["fp16"] = rep.to_dict()
        if not keep_cache_fp32:
            step.cache = [dataclasses.replace(c, scale=_fp16_scale(c.scale)) for c in step.cache]
    return step
