"""The int8 KV cache (README, "The int8 KV cache"): the step graph's attention over a cache
that holds K and V as int8 between scales.

    FP step graph, block i                      int8 cache (this pass)
    present_key_i = Concat(past_key_i, k)       present_key_i = Concat(past_key_i, Q(k^T), axis=3)
    QK = q @ Transpose(present_key_i)           QK = DQ(Q(q)) @ DQ(present_key_i)
    present_value_i = Concat(past_value_i, v)   present_value_i = Concat(past_value_i, Q(v), axis=2)
    AV = P @ present_value_i                    AV = DQ(Q(P, 1/127)) @ DQ(present_value_i)

Each token's K and V are quantized once, when the token is appended, with static
per-tensor scales from calibration (the ranges observed at the QK and AV products' inputs,
so an existing calibration cache serves); the cache never returns to float between steps.
K is stored transposed, [B2, H, c, P], so QK^T reads the cache as it is: no per-step
Transpose of the whole cache. V keeps [B2, H, P, c].

Both products take int8 on both sides. That is TensorRT's rule, and on ONNX Runtime's CPU
kernels DQ -> MatMul <- DQ runs as MatMulIntegerToFloat straight over the int8 cache,
measured about 2x faster than DequantizeLinear + float MatMul at VAR-d16's last scale
(2 x 16 heads, 256 queries, 680 keys, 2 threads: QK^T 0.95 against 1.9 ms per block, AV
0.86 against 1.85 ms). Narrower caches (``kv_bits`` < 8) are simulated: Q -> Clip -> int8.

Shift-and-sum (``shift_sum_cache``): the blocks with a plan get a second value cache,
``past_vcopy_i`` -> ``present_vcopy_i``, holding the shifted copies of their selected
tokens, and the AV product becomes the sum of the main product and the copies' product.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from sasq.errors import UserError
from sasq.exporter.manifest import CacheTensor
from sasq.exporter.qdq_edit import GraphEdit
from sasq.exporter.qdq_per_step import StepKey, step_index
from sasq.exporter.qdq_writer import add_qdq, add_quantize, qmax, qparams
from sasq.exporter.shift_sum import SUM_SUFFIX
from sasq.exporter.shift_sum_cache import CachePlan, CopyBranch
from sasq.exporter.u8s8 import SIGNED, Forms, probs_qdq, query_qdq


@dataclass(frozen=True)
class CacheLayer:
    """The attention of one block as the FP export writes it (names only)."""

    index: int
    past_key: str
    past_value: str
    present_key: str
    present_value: str
    k_new: str  # [B2, H, l, c] this step's keys (after the l2 norm, if any)
    v_new: str
    q: str  # QK's first input
    probs: str  # AV's first input (the softmax output)
    k_range: str  # the transposed cache QK reads: calibration's range of the K cache
    k_transpose: str  # node names
    qk: str
    av: str


@dataclass(frozen=True)
class LayerScales:
    """Static scales of one block: queries, the K and V caches (probabilities: 1/qmax)."""

    q: float
    k: float
    v: float


def find_cache_layers(model: onnx.ModelProto) -> list[CacheLayer]:
    """Every block's cache and attention products, found from the step graph's outputs
    ``present_key_i`` / ``present_value_i``; ``UserError`` when the graph is not an FP
    step graph of this exporter (e.g. already quantized)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for x in n.input:
            users.setdefault(x, []).append(n)
    inputs = {i.name for i in g.input}
    layers = []
    i = 0
    while f"present_key_{i}" in {o.name for o in g.output}:
        pk, pv = f"present_key_{i}", f"present_value_{i}"
        kc, vc = producer.get(pk), producer.get(pv)
        ok = kc is not None and vc is not None and kc.op_type == vc.op_type == "Concat"
        ok = ok and kc.input[0] == f"past_key_{i}" and vc.input[0] == f"past_value_{i}"
        ok = ok and f"past_key_{i}" in inputs
        kt = [u for u in users.get(pk, []) if u.op_type == "Transpose"] if ok else []
        qk = [u for u in users.get(kt[0].output[0], []) if u.op_type == "MatMul"] if kt else []
        av = [u for u in users.get(pv, []) if u.op_type == "MatMul"] if ok else []
        if len(kt) != 1 or len(qk) != 1 or len(av) != 1 or av[0].input[1] != pv:
            raise UserError(f"step graph block {i}: no float KV cache attention to rewrite "
                            "(is it already quantized? quantize the FP export)")  # fmt: skip
        layers.append(CacheLayer(
            i, kc.input[0], vc.input[0], pk, pv, kc.input[1], vc.input[1],
            qk[0].input[0], av[0].input[0], kt[0].output[0], kt[0].name, qk[0].name,
            av[0].name,
        ))  # fmt: skip
        i += 1
    if not layers:
        raise UserError("step graph has no present_key_0 output: not a sasq step graph")
    return layers


def _retype(g: onnx.GraphProto, name: str, elem: int, perm: tuple[int, ...] | None) -> list:
    """Set the element type (and permute the dims) of graph input/output ``name``."""
    for vi in [*g.input, *g.output]:
        if vi.name != name:
            continue
        t = vi.type.tensor_type
        t.elem_type = elem
        if perm is not None:
            dims = [onnx.TensorShapeProto.Dimension() for _ in t.shape.dim]
            for d, src in zip(dims, perm, strict=True):
                d.CopyFrom(t.shape.dim[src])
            del t.shape.dim[:]
            t.shape.dim.extend(dims)
        return [d.dim_param or d.dim_value for d in t.shape.dim]
    raise UserError(f"step graph has no input or output {name}")


def _add_io(g: onnx.GraphProto, name: str, out: bool, dims: list) -> None:
    vi = onnx.helper.make_tensor_value_info(name, TensorProto.INT8, dims)
    (g.output if out else g.input).append(vi)


@dataclass
class Int8Cache:
    """The rewritten step graph; its cache tensors in input order (for the manifest); and
    for each FP tensor the attention products read, the tensor holding the same values
    in the new graph (the dequantized cache), so tools can compare the two graphs."""

    model: onnx.ModelProto
    cache: list[CacheTensor]
    aliases: dict[str, str]


def int8_kv_cache(
    model: onnx.ModelProto,
    scales: Mapping[int, LayerScales],
    step: StepKey,
    a_bits: int = 8,
    kv_bits: int = 8,
    plans: Mapping[int, CachePlan] | None = None,
    prob_shift: bool = True,
    operands_qdq: bool = True,
    forms: Forms = SIGNED,
    int8_transpose: bool = False,
) -> Int8Cache:
    """Rewrite ``model`` (edited in place) to the int8 cache. ``step`` finds the scale
    step from a cache length (the shift-and-sum tables are indexed by it); ``plans``:
    block -> its copies; ``operands_qdq``: also Q/DQ the queries and probabilities (int8
    products), else they stay float; ``forms``: how they are written (signed int8, or the
    ``ort`` target's bounded uint8 forms of ``u8s8``; the cache itself is the same);
    ``int8_transpose``: the new keys are quantized first and transposed as int8 (the
    ``ort`` target; the same numbers, a quarter of the bytes moved; TensorRT's ONNX parser
    lists no INT8 Transpose, so the ``tensorrt`` target transposes them in float)."""
    layers = find_cache_layers(model)
    plans = plans or {}
    g = model.graph
    e = GraphEdit(model)
    nodes = {n.name: n for n in g.node}
    p_scale = 1.0 / qmax(a_bits)
    si = step_index(e, step, "kv_step") if any(p.copies for p in plans.values()) else None
    # Shape inference's types of the rewritten tensors would be stale.
    changed = {x for L in layers for x in (L.present_key, L.present_value)}
    keep_vi = [vi for vi in g.value_info if vi.name not in changed]
    del g.value_info[:]
    g.value_info.extend(keep_vi)
    cache: list[CacheTensor] = []
    aliases: dict[str, str] = {}
    for L in layers:
        if L.index not in scales:
            raise UserError(f"no KV cache scales for block {L.index}; recalibrate")
        s = scales[L.index]
        b = f"kv{L.index}"
        k_s, k_zp = qparams(e, s.k, f"{b}_k")
        v_s, v_zp = qparams(e, s.v, f"{b}_v")
        # keys: transpose the l new ones, store, read the whole cache as [B2, H, c, S].
        # In float, ORT adds a Q -> DQ pair of its own before the Transpose and
        # re-quantizes after it: about 30 ms of layout and Q/DQ kernels in VAR-d16's int8
        # steps (sasq profile, docs/evidence/d16-roofline.md).
        kc = next(n for n in g.node if n.output[0] == L.present_key)
        if int8_transpose:
            kq = add_quantize(e, L.k_new, k_s, k_zp, f"{b}_kstore", kv_bits)
            kc.input[1] = e.node("Transpose", [kq], f"{b}_kT", perm=[0, 1, 3, 2])[0]
        else:
            kt = e.node("Transpose", [L.k_new], f"{b}_kT", perm=[0, 1, 3, 2])[0]
            kc.input[1] = add_quantize(e, kt, k_s, k_zp, f"{b}_kstore", kv_bits)
        del kc.attribute[:]
        kc.attribute.append(onnx.helper.make_attribute("axis", 3))
        qk = nodes[L.qk]
        qk.input[1] = e.node("DequantizeLinear", [L.present_key, k_s, k_zp], f"{b}_kread")[0]
        aliases[L.k_range] = qk.input[1]
        if operands_qdq and forms.query_u8:
            qk.input[0] = query_qdq(e, L.q, s.q, qmax(a_bits), f"{b}_q")
        elif operands_qdq:
            qk.input[0] = add_qdq(e, L.q, s.q, f"{b}_q", a_bits)
        g.node.remove(nodes[L.k_transpose])
        shape_k = _retype(g, L.past_key, TensorProto.INT8, (0, 1, 3, 2))
        _retype(g, L.present_key, TensorProto.INT8, (0, 1, 3, 2))
        shape_v = _retype(g, L.past_value, TensorProto.INT8, None)
        _retype(g, L.present_value, TensorProto.INT8, None)
        cache += [
            CacheTensor(L.past_key, L.present_key, "INT8", tuple(shape_k), 3, step.lengths, s.k),
            CacheTensor(
                L.past_value, L.present_value, "INT8", tuple(shape_v), 2, step.lengths, s.v
            ),  # fmt: skip
        ]

        def store(x: str, base: str, v_s=v_s, v_zp=v_zp) -> str:
            return add_quantize(e, x, v_s, v_zp, base, kv_bits)

        def dequant(x: str, base: str, v_s=v_s, v_zp=v_zp) -> str:
            return e.node("DequantizeLinear", [x, v_s, v_zp], f"{base}_DQ")[0]

        def qdq_p(x: str, base: str, clip: bool = False) -> str:
            if not operands_qdq:
                return x
            if forms.probs_u8:  # clip: the copies' probabilities are no Softmax output
                return probs_qdq(e, x, p_scale, base, clip)
            return add_qdq(e, x, p_scale, base, a_bits)

        def qdq_copies(x: str, base: str) -> str:
            return qdq_p(x, base, clip=True)

        plan = plans.get(L.index)
        branch = None
        v_main = L.v_new
        if plan is not None and plan.copies and si is not None:
            branch = CopyBranch(e, plan, si, f"{b}_ss", s.v, p_scale, prob_shift)
            past, present = f"past_vcopy_{L.index}", f"present_vcopy_{L.index}"
            # Each layer stores its own number of copies, and the step appends to them:
            # one shared dim_param would tell ORT's planner these sizes are equal, and it
            # would reuse one buffer for tensors of different lengths.
            dims = [shape_v[0], shape_v[1], f"copies_{L.index}", shape_v[3]]
            _add_io(g, past, False, dims)
            _add_io(g, present, True, [*dims[:2], f"copies_{L.index}_out", dims[3]])
            v_main = branch.append(L.v_new, past, present, store)
            cache.append(
                CacheTensor(past, present, "INT8", tuple(dims), 2, plan.stored_before, s.v)
            )
        vc = next(n for n in g.node if n.output[0] == L.present_value)
        vc.input[1] = store(v_main, f"{b}_vstore")
        av = nodes[L.av]
        av.input[1] = dequant(L.present_value, f"{b}_vread")
        if branch is None:  # with copies, the main cache holds the selected rows as 0
            aliases[L.present_value] = av.input[1]
        av.input[0] = qdq_p(L.probs, f"{b}_p")
        if branch is not None:
            out = av.output[0]
            av.output[0] = e.fresh(f"{out}_main")
            extra = branch.read(L.probs, f"present_vcopy_{L.index}", dequant, qdq_copies)
            e.node_to("Sum", [av.output[0], extra], [out], f"{L.av}{SUM_SUFFIX}")
    return Int8Cache(e.finish(), _ordered(g, cache), aliases)


def _ordered(g: onnx.GraphProto, cache: list[CacheTensor]) -> list[CacheTensor]:
    """Cache tensors in graph input order, with the copy caches' inputs moved after the
    K/V pairs (the inputs were appended)."""
    order = {vi.name: k for k, vi in enumerate(g.input)}
    return sorted(cache, key=lambda c: order[c.input])


def copy_node_names(model: onnx.ModelProto) -> list[str]:
    """The float MatMuls that repeat and weight the selected probability columns."""
    return [n.name for n in model.graph.node if n.name.endswith("_ss_pick_mm")]
