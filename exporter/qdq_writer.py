"""Q/DQ writer: FP ONNX + calibration ranges -> TensorRT explicit-quantization ONNX.

The rules (README "A tour of the CLI", ``quantize``): signed int8, zero point 0; activations
per tensor (scale = amax / 127 from ``CalibCache.ranges``, ``MIN_SCALE`` for a zero range);
weights per output channel (the float initializer becomes an int8 initializer +
DequantizeLinear on the N axis); Q/DQ on both inputs of every quantized MatMul/Gemm, the
attention QK^T and AV included; the softmax probabilities at scale 1/127. What stays float
is configuration: ``float_nodes`` globs, GEMMs with K or N < ``min_gemm_dim``, and GEMVs (an
activation of rank < 3 has no token axis, e.g. a linear on a per-image vector). The report
names every node kept float, so ``engines.lint.lint(model,
LintConfig(float_nodes=report.float_nodes))`` checks the rest.

With an int8 KV cache (``KvCache.INT8``, the default) this writer leaves the attention
products alone: ``kv_cache.int8_kv_cache`` stores K and V as int8 when they are appended and
writes both products' Q/DQ itself (queries and probabilities included), since the cache
side's scales are fixed at the step that stores a token. ``attention_qdq=False`` leaves
the query and probability sides float (cache-only studies).

Narrower widths are simulated: weights on the 2^(w-1)-1 grid stored as int8, activations
through Q -> Clip(-(2^(a-1)-1), 2^(a-1)-1) -> DQ (not a TensorRT graph: lint flags the Clip).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from sasq.errors import UserError
from sasq.exporter.qdq_config import KvCache, QuantConfig
from sasq.exporter.qdq_edit import GraphEdit
from sasq.exporter.qdq_per_step import PerStepScaling, StepKey
from sasq.exporter.shift_sum import LayerPlan, expand_av, extra_keys_per_layer, plan_layer
from sasq.exporter.shift_sum_cache import CachePlan, plan_cache_layer
from sasq.exporter.u8s8 import weight_grid
from sasq.quant.cache import CalibCache
from sasq.quant.scales import activation_scale, weight_scales_per_channel
from sasq.quant.targets import OpKind, QuantTarget, quantizable_inputs


@dataclass
class QdqReport:
    """quantized: GEMM node names given Q/DQ; kept_float: node -> why it stayed float;
    shift_sum: AV node -> extra key columns per step; copies: AV node -> per step, the
    number of copies of each key position; cache_plans: with the int8 KV cache, the
    attention products are left to ``kv_cache.int8_kv_cache`` and these are its copies."""

    quantized: list[str] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)
    shift_sum: dict[str, list[int]] = field(default_factory=dict)
    copies: dict[str, list[list[int]]] = field(default_factory=dict)
    cache_plans: dict[str, CachePlan] = field(default_factory=dict)  # int8 cache: AV -> plan

    @property
    def float_nodes(self) -> tuple[str, ...]:
        """The exact node names to pass to the lint as ``float_nodes``."""
        return tuple(self.kept_float)


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def add_quantize(edit: GraphEdit, x: str, scale: str, zp: str, base: str, bits: int) -> str:
    """x -> Q (-> Clip to the narrower grid if bits < 8): the int8 tensor."""
    q = edit.node("QuantizeLinear", [x, scale, zp], f"{base}_Q")[0]
    if bits < 8:
        m = qmax(bits)
        lo, hi = edit.const(f"{base}_lo", np.int8(-m)), edit.const(f"{base}_hi", np.int8(m))
        q = edit.node("Clip", [q, lo, hi], f"{base}_clip")[0]
    return q


def qparams(edit: GraphEdit, scale: float, base: str) -> tuple[str, str]:
    """Constant scale and zero point (0, int8) of a per-tensor Q/DQ."""
    s = edit.const(f"{base}_scale", np.array(scale, np.float32))
    return s, edit.const(f"{base}_zp", np.array(0, np.int8))


def add_qdq(edit: GraphEdit, x: str, scale: float, base: str, bits: int = 8) -> str:
    """x -> Q -> (Clip if bits < 8) -> DQ; returns the DQ output."""
    s, zp = qparams(edit, scale, base)
    q = add_quantize(edit, x, s, zp, base, bits)
    return edit.node("DequantizeLinear", [q, s, zp], f"{base}_DQ")[0]


def _weightless(model: onnx.ModelProto, keep_bytes: int = 1024) -> onnx.ModelProto:
    """The graph with large initializers reduced to name, type and dims: shape inference
    needs the values of small constants (Reshape targets) but not of weights, and a copy
    of a VAR-d16 step with its 1.2 GB of weights is what exhausted memory."""
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    g, src = light.graph, model.graph
    g.name = src.name
    for part in ("node", "input", "output", "value_info"):
        getattr(g, part).extend(getattr(src, part))
    for t in src.initializer:
        if t.ByteSize() <= keep_bytes:
            g.initializer.append(t)
        else:
            g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    return light


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(_weightless(model))
    except Exception:  # shapes only sharpen the GEMV / tiny-GEMM exemptions
        inferred = model
    g = inferred.graph
    out: dict[str, list[int | None]] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    return out


def _float_reason(
    t: QuantTarget, node: onnx.NodeProto, cfg: QuantConfig, shapes, inits
) -> str | None:
    names = [t.node] + ([t.weight] if t.weight else [])
    if any(fnmatch.fnmatchcase(n, pat) for n in names for pat in cfg.float_nodes):
        return "float_nodes"
    if t.kind == OpKind.LINEAR:
        if t.weight not in inits:
            return "weight is not an initializer"
        act_shape = shapes.get(t.activations[0])
        if act_shape is not None and len(act_shape) < 3:
            return "gemv (no token axis)"
        w = list(inits[t.weight].dims)
        if len(w) == 2:
            K, N = (w[0], w[1]) if t.weight_axis == 1 else (w[1], w[0])
        else:
            K, N = w[-2], w[-1]
        if min(K, N) < cfg.min_gemm_dim:
            return f"tiny (K, N = {K}, {N})"
        return None
    a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
    k = a[-1] if a else None
    n = b[-1] if b and len(b) >= 2 else None
    if any(d is not None and d < cfg.min_gemm_dim for d in (k, n)):
        return f"tiny (K, N = {k}, {n})"
    return None


class _Writer:
    def __init__(
        self, model: onnx.ModelProto, cache: CalibCache, cfg: QuantConfig, key: StepKey | None
    ):
        self.edit = GraphEdit(model)
        self.cache, self.cfg = cache, cfg
        self._acts: dict[tuple[str, float], tuple[str, str | None]] = {}
        self._weights: dict[tuple[str, int], str] = {}
        self.per_step = PerStepScaling(self.edit, key) if key is not None else None

    def qdq(self, x: str, scale: float, base: str) -> str:
        """x -> Q -> (Clip if a_bits < 8) -> DQ; returns the DQ output."""
        return add_qdq(self.edit, x, scale, base, self.cfg.a_bits)

    def act_scale(self, x: str, user: str) -> float:
        r = self.cache.ranges.get(x)
        if r is None:
            raise UserError(f"calibration cache has no range for {x} (input of {user}); "
                            "recalibrate")  # fmt: skip
        return activation_scale(r.amax, self.cfg.a_bits)

    def act(self, x: str, user: str, per_step: bool = True) -> tuple[str, str | None]:
        """One shared Q/DQ pair per (tensor, scale): (its DQ output, the per-step ratio r
        the GEMM output must be multiplied by, or None)."""
        scale = self.act_scale(x, user)
        ps = self.per_step if per_step else None
        key = (x, scale) if ps is None else (f"{x}/per_step", scale)
        if key not in self._acts:
            ratios = ps.ratios(x, self.cache.ranges[x]) if ps is not None else None
            if ratios is None:
                self._acts[key] = (self.qdq(x, scale, f"{x}_act"), None)
            else:
                x_in = self.edit.node("Mul", [x, ratios[0]], f"{x}_per_step")[0]
                self._acts[key] = (self.qdq(x_in, scale, f"{x}_act"), ratios[1])
        return self._acts[key]

    def weight(self, w: str, axis: int) -> str:
        """float initializer -> int8 initializer + per-channel DequantizeLinear (one per
        weight and axis, also when several GEMMs share the weight)."""
        if (w, axis) in self._weights:
            return self._weights[w, axis]
        e = self.edit
        W = numpy_helper.to_array(e.inits[w]).astype(np.float32)
        scale = weight_scales_per_channel(W, self.cfg.w_bits, axis).astype(np.float32)
        # the grid: the bits', or narrower for ORT's u8 x s8 kernels (u8s8.py)
        m = self.cfg.forms.weight_qmax
        q, scale = weight_grid(W, scale, m, axis, qmax(self.cfg.w_bits))
        qi = e.const(f"{w}_int8", q)
        s = e.const(f"{w}_scale", scale)
        zp = e.const(f"{w}_zp", np.zeros_like(scale, dtype=np.int8))
        self._weights[w, axis] = e.node("DequantizeLinear", [qi, s, zp], f"{w}_DQ", axis=axis)[0]
        return self._weights[w, axis]


def _plans(
    targets, cache: CalibCache, cfg: QuantConfig, shapes
) -> dict[str, LayerPlan | CachePlan]:
    """Shift-and-sum copies per AV node (decided at calibration): per step for the
    fp32 cache, per key position for the int8 cache (copies made when a token is stored)."""
    av = [
        t
        for t in targets
        if t.kind == OpKind.ATTN_AV
        and any(fnmatch.fnmatchcase(t.node, pat) for pat in cfg.shift_sum.layers)
    ]
    linear_kn = 0
    for t in targets:
        w = shapes.get(t.weight or "")
        act = shapes.get(t.activations[0])
        if t.kind == OpKind.LINEAR and w and len(w) == 2 and (act is None or len(act) >= 3):
            linear_kn += w[0] * w[1]
    plans = {}
    for t in av:
        steps = cache.attention.get(t.node)
        if not steps:
            raise UserError(f"calibration cache has no attention statistics for {t.node}; "
                            "recalibrate")  # fmt: skip
        v = shapes.get(t.activations[-1]) or []
        HD = (v[-3] or 1) * (v[-1] or 64) if len(v) >= 3 else 64
        caps = [extra_keys_per_layer(cfg.shift_sum.budget, linear_kn, len(a), HD, len(av))
                for a in steps]  # fmt: skip
        if cfg.kv_cache == KvCache.INT8:
            rows_cap = int(cfg.shift_sum.cache_fraction * 2 * len(steps[-1]))  # K and V rows
            plans[t.node] = plan_cache_layer(t.node, steps, cfg.shift_sum, caps, rows_cap)
        else:
            plans[t.node] = plan_layer(t.node, steps, cfg.shift_sum, caps)
    return plans


def has_kv_cache(model: onnx.ModelProto) -> bool:
    """The graph carries a KV cache between calls (a step graph: ``present_key_0`` output)."""
    return any(o.name == "present_key_0" for o in model.graph.output)


def write_qdq(
    model: onnx.ModelProto,
    cache: CalibCache,
    cfg: QuantConfig,
    step_key: StepKey | None = None,
    in_place: bool = False,
) -> tuple[onnx.ModelProto, QdqReport]:
    """A Q/DQ copy of ``model`` (weights loaded) and what was done to each GEMM.
    ``step_key`` tells static per-step scales how to find the step (``qdq_per_step``);
    ``in_place`` edits ``model`` itself (for callers that loaded it just for this)."""
    if cfg.static_per_step and step_key is None:
        raise UserError("static per-step scales need a step key (the KV cache length per step)")
    out = model
    if not in_place:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    targets = quantizable_inputs(out)
    # The int8 cache needs the cache I/O of a step graph; any other graph (a test block, a
    # graph without cache) gets its attention products quantized in place as before.
    if cfg.kv_cache == KvCache.INT8 and not has_kv_cache(out):
        cfg = dataclasses.replace(cfg, kv_cache=KvCache.FP32)
    shapes = _shapes(out)
    w = _Writer(out, cache, cfg, step_key if cfg.static_per_step else None)
    report = QdqReport()
    by_name = {n.name: n for n in out.graph.node}
    plans = _plans(targets, cache, cfg, shapes) if cfg.shift_sum.enabled else {}
    p_scale = 1.0 / qmax(cfg.a_bits)
    replaced: set[str] = set()
    for t in targets:
        node = by_name.get(t.node)
        if node is None:
            raise UserError(f"{t.node}: unnamed GEMM; the Q/DQ writer needs named nodes")
        reason = _float_reason(t, node, cfg, shapes, w.edit.inits)
        if reason is not None:
            report.kept_float[t.node] = reason
            continue
        report.quantized.append(t.node)
        if cfg.kv_cache == KvCache.INT8 and t.kind in (OpKind.ATTN_QK, OpKind.ATTN_AV):
            plan = plans.get(t.node)
            if isinstance(plan, CachePlan):
                report.cache_plans[t.node] = plan
                report.shift_sum[t.node] = [plan.columns(si) for si in range(len(plan.ends))]
                report.copies[t.node] = [plan.n[:end].tolist() for end in plan.ends]
            continue  # written with the cache by kv_cache.int8_kv_cache
        rs: list[str | None] = []
        if t.kind == OpKind.LINEAR:
            i_w = list(node.input[:2]).index(t.weight)
            biased = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] != ""
            # a row scaling of the output would scale Gemm's bias too: fixed scale there
            node.input[1 - i_w], r = w.act(node.input[1 - i_w], t.node, per_step=not biased)
            node.input[i_w] = w.weight(t.weight, t.weight_axis)
            replaced.add(t.weight)
            rs.append(r)
        elif t.kind == OpKind.ATTN_AV:
            v_scale = w.act_scale(node.input[1], t.node)
            if t.node in plans:
                picks = expand_av(
                    w.edit, node, plans[t.node], v_scale, w.qdq, p_scale, cfg.shift_sum.prob_shift
                )
                for pick in picks:
                    report.kept_float[pick] = "shift-and-sum column pick (float, before Q)"
                plan = plans[t.node]
                report.shift_sum[t.node] = [plan.extra(si) for si in range(len(plan.n_steps))]
                report.copies[t.node] = [n.tolist() for n in plan.n_steps]
            else:
                node.input[0] = w.qdq(node.input[0], p_scale, f"{t.node}_probs")
                node.input[1], r = w.act(node.input[1], t.node)
                rs.append(r)
        else:
            (node.input[0], r0), (node.input[1], r1) = (w.act(x, t.node) for x in node.input[:2])
            rs += [r0, r1]
        if w.per_step is not None:
            w.per_step.rescale_output(node, [r for r in rs if r is not None])
    for name in replaced:
        w.edit.remove_initializer(name)
    return w.edit.finish(), report
