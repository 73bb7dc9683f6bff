"""The ``ort`` target's int8 forms that ONNX Runtime's u8 x s8 kernels cannot saturate.

On x86, ONNX Runtime runs a quantized MatMul as uint8 A x int8 B (it shifts signed int8
activations by 128); without VNNI its kernel adds pairs of products in int16 and
saturates (``sasq.engines.int8_kernels``). A pair sum fits int16 when |b| <= 64 with any
u8 a (255 x 64 x 2 = 32640), or when a <= 128 with any int8 b (128 x 127 x 2 = 32512,
128 x -128 x 2 = -32768). ``U8S8Form.BOUNDED`` writes every product of the step so, per
product, the side that costs least:

- linears (activation x int8 weight): the weights on a 7-bit grid, |w| <= 64 per output
  channel (ONNX Runtime's own ``reduce_range``); the activations keep 8 bits;
- QK^T (queries x the int8 K cache): the cache keeps 8 bits, the same numbers as the
  ``tensorrt`` target, because a graph input can hold any int8 as far as the graph shows;
  the queries are narrowed instead: Clip to +-64 steps, then uint8 with zero point 64,
  raw 0..128 (7 bits, the scale amax / 64);
- AV and the shift-and-sum copies' product (probabilities x the int8 V caches): the
  probabilities are in [0, 1], so at scale 1/127 their int8 values are 0..127 already;
  written as uint8 with zero point 0 they are the same numbers, and ORT has nothing to
  shift: free. The copies' probabilities (p / n plus a shift under half a step, so also
  in [0, 1]) pass a Clip(0, 1) first, which changes no value but shows the bound in the
  graph (``int8_graph`` proves every bound from the graph alone).

Only 8-bit operands are narrowed: narrower (simulated) widths fit already. ``FULL`` keeps
8 bits everywhere (the ``tensorrt`` numbers): exact on CPUs with VNNI or AMX and off x86;
elsewhere an ONNX Runtime session runs it as s8 x s8 (``ort_session``: exact, slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sasq.exporter.qdq_edit import GraphEdit

SAFE_QMAX = 64  # |b| <= 64 with a full u8 a; a <= 128 (= 2 x 64) with a full int8 b
U8_ZP_QUERY = 64  # queries in [-64, 64] steps -> raw uint8 0..128


class U8S8Form(str, Enum):
    """How the ``ort`` target writes the operands ORT feeds to its u8 x s8 kernels."""

    BOUNDED = "bounded"  # cannot saturate on any CPU (7-bit weights and queries)
    FULL = "full"  # 8 bits everywhere; exact only where u8 x s8 does not saturate


@dataclass(frozen=True)
class Forms:
    """The operand forms of one quantized step. weight_qmax: largest |w| of an 8-bit
    weight's grid; query_u8: queries as uint8 zero point 64 within +-64 steps; probs_u8:
    probabilities as uint8 zero point 0."""

    weight_qmax: int = 127
    query_u8: bool = False
    probs_u8: bool = False


SIGNED = Forms()  # 8-bit signed int8 everywhere (the tensorrt target's numbers)


def forms_for(ort_target: bool, form: U8S8Form, w_bits: int, a_bits: int) -> Forms:
    """The forms of a config: the weights on their bits' grid, narrowed only by the ``ort``
    target's ``BOUNDED`` form and only where 8-bit. Narrower (simulated) widths need
    nothing: a weight of <= 7 bits fits any u8 activation (255 x 63 x 2 < 32767), and
    activations of <= 7 bits pass a Clip between Q and DQ, after which ORT computes the
    product in float."""
    w_qmax = 2 ** (w_bits - 1) - 1
    if not ort_target or form != U8S8Form.BOUNDED:
        return Forms(weight_qmax=w_qmax)
    return Forms(weight_qmax=min(w_qmax, SAFE_QMAX), query_u8=a_bits == 8, probs_u8=a_bits == 8)


def weight_grid(W: np.ndarray, scale: np.ndarray, qmax: int, axis: int, bits_qmax: int):
    """(int8 weights, scales) on the grid +-``qmax``: the writer's per-channel scales made
    for ``bits_qmax`` steps, stretched to ``qmax`` steps (amax / qmax)."""
    if qmax != bits_qmax:
        scale = (scale.astype(np.float64) * bits_qmax / qmax).astype(np.float32)
    shape = [1] * W.ndim
    shape[axis] = -1
    q = np.clip(np.rint(W / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale


def query_qdq(e: GraphEdit, x: str, scale: float, bits_qmax: int, base: str) -> str:
    """x -> Clip(+-64 steps) -> Q(uint8, zero point 64) -> DQ: the queries on a 7-bit grid
    (scale stretched from ``bits_qmax`` steps to 64) whose raw values are 0..128."""
    s = scale * bits_qmax / SAFE_QMAX
    lim = np.float32(SAFE_QMAX * np.float32(s))
    lo, hi = e.const(f"{base}_lo", -lim), e.const(f"{base}_hi", lim)
    xc = e.node("Clip", [x, lo, hi], f"{base}_clip7")[0]
    sc = e.const(f"{base}_scale", np.array(s, np.float32))
    zp = e.const(f"{base}_zp", np.array(U8_ZP_QUERY, np.uint8))
    q = e.node("QuantizeLinear", [xc, sc, zp], f"{base}_Q")[0]
    return e.node("DequantizeLinear", [q, sc, zp], f"{base}_DQ")[0]


def probs_qdq(e: GraphEdit, x: str, scale: float, base: str, clip: bool = False) -> str:
    """x -> (Clip(0, 1)) -> Q(uint8, zero point 0) -> DQ: probabilities at ``scale`` (1/127),
    raw 0..127, the same numbers as int8. ``clip`` where x is not a Softmax output."""
    if clip:
        lo, hi = e.const(f"{base}_p0", np.float32(0)), e.const(f"{base}_p1", np.float32(1))
        x = e.node("Clip", [x, lo, hi], f"{base}_clip01")[0]
    sc = e.const(f"{base}_scale", np.array(scale, np.float32))
    zp = e.const(f"{base}_zp", np.array(0, np.uint8))
    q = e.node("QuantizeLinear", [x, sc, zp], f"{base}_Q")[0]
    return e.node("DequantizeLinear", [q, sc, zp], f"{base}_DQ")[0]


def record(form: U8S8Form, forms: Forms) -> dict:
    """What the manifest's ``extra.quant.u8s8`` says for an ``ort`` target export (the
    tensorrt target records None: signed int8); ``read_record`` checks it."""
    return {
        "form": form.value,
        "weight_qmax": forms.weight_qmax,
        "query": "uint8 zp 64, +-64 steps" if forms.query_u8 else "int8",
        "probs": "uint8 zp 0" if forms.probs_u8 else "int8",
    }


def read_record(quant: dict, where: str) -> dict | None:
    """A quantized export's ``extra.quant.u8s8`` checked where it is read: None when the
    export predates it; ``UserError`` (one line) when it is malformed."""
    from sasq.errors import UserError

    rec = quant.get("u8s8")
    if rec is None:
        return None
    ok = isinstance(rec, dict) and rec.get("form") in {f.value for f in U8S8Form}
    qmax = rec.get("weight_qmax") if isinstance(rec, dict) else None
    ok = ok and isinstance(qmax, int) and not isinstance(qmax, bool) and 1 <= qmax <= 127
    ok = ok and all(isinstance(rec.get(k), str) for k in ("query", "probs"))
    if not ok:
        raise UserError(f"{where}: extra.quant.u8s8 is not a valid record ({rec!r:.80}); "
                        "re-quantize the export")  # fmt: skip
    return rec
