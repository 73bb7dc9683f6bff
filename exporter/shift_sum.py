"""Shift-and-sum attention (DESIGN.md): the math, the token selection, and the expanded graph.

A key token with n copies contributes (1/n) * sum_c p * DQ(Q(v + d_c)), with shifts
d_c = (2c+1-n) * s/(2n) (s: V's scale), so its rounding error bound drops from s/2 to
s/(2n) at the same int8 storage.

Selection: per layer and scale step, from the attention each key position receives
(mean over queries, ``CalibCache.attention``), n = 2^clamp(ceil(log2(a/theta)), 0, log2
max_n), with theta the smallest breakpoint whose extra copies, sum(n - 1), stay within a
cap. The cap (``extra_keys_per_layer``) turns the budget into key columns: one extra key
costs H*D multiply-adds per query token, and the budget is a fraction of the step's MatMul
work per query token (every linear's K*N plus 2*S*H*D per attention block), shared evenly
by the layers.

In the graph (one dynamic step graph serves every scale) the selection is a constant
table indexed by the step: the step comes from the key length S (= Shape(V)[2], unique
per step in VAR's layout) through a constant lookup ``step_of_S``; any other S gets the
last row, no copies. S may not exceed the longest calibrated step (the model's total token
count in VAR's decoding loop). Branch 0 is the plain AV product over all S keys with each
position's first copy (shift, 1/n weight); branch 1 gathers every other copy (position j
repeated n_j - 1 times, each entry with its own shift; padded with a zero-weight dummy so
it is never empty). Each branch has its own Q/DQ (same scales) and MatMul; a Sum adds
them. ``fuse_shift_sum`` merges the branches into one MatMul over the concatenated keys.

Probabilities: copy c of a token gets p/n, plus (with ``prob_shift``) an offset of
(2c+1-n)/(2n) probability steps, before the probabilities' Q at 1/127.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from sasq.exporter.qdq_config import ShiftSumConfig, ShiftSumMode
from sasq.exporter.qdq_edit import GraphEdit

SUM_SUFFIX = "_shift_sum"  # the Sum node of an expanded AV product is named <av>_shift_sum


# ----- the math -----


def shifts(n: int, s: float) -> np.ndarray:
    """The n shifts d_c = (2c+1-n) * s/(2n): +-s/4 for n = 2, +-s/8 and +-3s/8 for n = 4."""
    c = np.arange(n, dtype=np.float64)
    return (2 * c + 1 - n) * s / (2 * n)


def fake_quant(x: np.ndarray, s: float, qmax: int = 127) -> np.ndarray:
    """DQ(Q(x)) with round-half-to-even and saturation, as ONNX QuantizeLinear does."""
    return np.clip(np.rint(x / s), -qmax - 1, qmax) * s


def shift_sum_dequant(v: np.ndarray, s: float, n: int, qmax: int = 127) -> np.ndarray:
    """(1/n) * sum_c DQ(Q(v + d_c)): the value a token with n copies contributes."""
    return np.mean([fake_quant(v + d, s, qmax) for d in shifts(n, s)], axis=0)


# ----- token selection -----


def copies_for(attn: np.ndarray, theta: float, max_n: int) -> np.ndarray:
    """n = 2^clamp(ceil(log2(a / theta)), 0, log2(max_n)) per key position."""
    a = np.maximum(np.asarray(attn, dtype=np.float64), 1e-30)
    e = np.clip(np.ceil(np.log2(a / theta) - 1e-9), 0, int(math.log2(max_n)))
    return (2**e).astype(np.int64)


def choose_copies(attn: Sequence[float], cap: int, max_n: int) -> np.ndarray:
    """Copies per key position with sum(n - 1) <= cap and theta as small as that allows.
    The extra work only grows as theta falls, and it changes only at the breakpoints
    theta = a_j / 2^m, so those are tried from the largest down."""
    a = np.asarray(attn, dtype=np.float64)
    best = np.ones(len(a), dtype=np.int64)
    if cap <= 0 or max_n == 1 or len(a) == 0:
        return best
    m = np.arange(int(math.log2(max_n)) + 1)
    thetas = np.unique((a[:, None] / 2.0 ** m[None, :]).ravel())[::-1]
    for theta in thetas[thetas > 0]:
        n = copies_for(a, theta, max_n)
        if int((n - 1).sum()) > cap:
            break
        best = n
    return best


def extra_keys_per_layer(budget: float, linear_kn: int, S: int, HD: int, layers: int) -> int:
    """Extra key columns each layer may add at a step with S keys (see the module doc)."""
    work = linear_kn + layers * 2 * S * HD
    return int(budget * work / (HD * max(layers, 1)))


@dataclass(frozen=True)
class LayerPlan:
    """Copies per key position for each step of one AV product (``n_steps[si][j]``)."""

    node: str
    n_steps: tuple[np.ndarray, ...]

    @property
    def max_n(self) -> int:
        return int(max((int(n.max()) for n in self.n_steps if len(n)), default=1))

    def extra(self, si: int) -> int:
        return int((self.n_steps[si] - 1).sum())


def plan_layer(node: str, attn_steps, cfg: ShiftSumConfig, caps: Sequence[int]) -> LayerPlan:
    """The selection of one layer from its calibrated attention per step."""
    out = []
    for si, a in enumerate(attn_steps):
        if cfg.mode == ShiftSumMode.ALL2:
            out.append(np.full(len(a), min(2, cfg.max_n), dtype=np.int64))
        else:
            out.append(choose_copies(a, caps[si], cfg.max_n))
    return LayerPlan(node, tuple(out))


# ----- the expanded graph -----


def _tables(plan: LayerPlan, s: float, p_scale: float):
    """Per step (plus a last 'no copies' row): branch 0's V shift, probability weight and
    probability offset per position; for the extra branch (if any copies) the gathered
    positions (one entry per extra copy) with their shifts, weights and offsets, and the
    number of entries per step."""
    SN = len(plan.n_steps)
    S_max = max(len(n) for n in plan.n_steps)
    shift0 = np.zeros((SN + 1, S_max), np.float32)
    w0 = np.ones((SN + 1, S_max), np.float32)
    off0 = np.zeros((SN + 1, S_max), np.float32)
    for si, n in enumerate(plan.n_steps):
        for j, nj in enumerate(n):
            shift0[si, j] = shifts(int(nj), s)[0]
            off0[si, j] = shifts(int(nj), p_scale)[0]
            w0[si, j] = 1.0 / nj
    branches = []
    if plan.max_n > 1:  # one branch with every extra copy (position j, copy c >= 1)
        rows = [[(j, cp) for j in range(len(n)) for cp in range(1, int(n[j]))]
                for n in plan.n_steps]  # fmt: skip
        E = max(1, max(len(r) for r in rows))
        idx = np.zeros((SN + 1, E), np.int64)
        sh = np.zeros((SN + 1, E), np.float32)
        off = np.zeros((SN + 1, E), np.float32)
        w = np.zeros((SN + 1, E), np.float32)  # padding: weight 0, so it adds exactly 0
        length = np.ones(SN + 1, np.int64)
        for si, r in enumerate(rows):
            n = plan.n_steps[si]
            length[si] = max(1, len(r))
            for e, (j, cp) in enumerate(r):
                idx[si, e] = j
                sh[si, e] = shifts(int(n[j]), s)[cp]
                off[si, e] = shifts(int(n[j]), p_scale)[cp]
                w[si, e] = 1.0 / n[j]
        branches.append((idx, sh, w, off, length))
    return (shift0, w0, off0), branches


def expand_av(
    edit: GraphEdit,
    av: onnx.NodeProto,
    plan: LayerPlan,
    v_scale: float,
    qdq,
    p_scale: float,
    prob_shift: bool = True,
) -> None:
    """Replace the AV node ``av`` by shift-and-sum branches and a Sum.

    ``qdq(x, scale, base) -> name`` writes one activation Q/DQ pair (the writer's, so bit
    widths and clipping match the rest of the graph)."""
    p, v, out = av.input[0], av.input[1], av.output[0]
    name = av.name or edit.fresh("av")
    steps_S = [len(n) for n in plan.n_steps]
    SN = len(steps_S)
    step_of_S = np.full(max(steps_S) + 2, SN, np.int64)
    for si, S in enumerate(steps_S):
        step_of_S[S] = si
    (shift0, w0, off0), branches = _tables(plan, v_scale, p_scale)
    c = edit.const
    S = edit.node("Shape", [v], f"{name}_S", start=-2, end=-1)[0]
    si = edit.node("Gather", [c(f"{name}_step_of_S", step_of_S), S], f"{name}_step")[0]
    zero1, ax1 = (
        c(f"{name}_zero", np.array([0], np.int64)),
        c(f"{name}_ax1", np.array([1], np.int64)),
    )
    col = c(f"{name}_col", np.array([-1, 1], np.int64))
    flat = c(f"{name}_flat", np.array([-1], np.int64))

    def row(table: np.ndarray, length: str, what: str) -> str:
        """table[step, :length] as a [1, length] tensor."""
        r = edit.node("Gather", [c(f"{name}_{what}", table), si], f"{name}_{what}_row")[0]
        return edit.node("Slice", [r, zero1, length, ax1], f"{name}_{what}_sl")[0]

    def branch(v_in: str, p_in: str, sh: str, w: str, off: str | None, k: int) -> str:
        sh_col = edit.node("Reshape", [sh, col], f"{name}_b{k}_shcol")[0]
        v_sh = edit.node("Add", [v_in, sh_col], f"{name}_b{k}_vshift")[0]
        p_w = edit.node("Mul", [p_in, w], f"{name}_b{k}_pw")[0]
        if off is not None:
            p_w = edit.node("Add", [p_w, off], f"{name}_b{k}_pshift")[0]
        vq, pq = qdq(v_sh, v_scale, f"{name}_b{k}_v"), qdq(p_w, p_scale, f"{name}_b{k}_p")
        return edit.node("MatMul", [pq, vq], f"{name}_b{k}")[0]

    def offsets(table: np.ndarray, length: str, what: str) -> str | None:
        return row(table, length, what) if prob_shift else None

    outs = [branch(v, p, row(shift0, S, "shift0"), row(w0, S, "w0"), offsets(off0, S, "off0"), 0)]
    for k, (idx, sh, w, off, length) in enumerate(branches, start=1):
        E = edit.node("Gather", [c(f"{name}_len{k}", length), si], f"{name}_E{k}")[0]
        ix = edit.node("Reshape", [row(idx, E, f"idx{k}"), flat], f"{name}_ix{k}")[0]
        v_k = edit.node("Gather", [v, ix], f"{name}_v{k}", axis=-2)[0]
        p_k = edit.node("Gather", [p, ix], f"{name}_p{k}", axis=-1)[0]
        off_k = offsets(off, E, f"off{k}")
        outs.append(branch(v_k, p_k, row(sh, E, f"shift{k}"), row(w, E, f"w{k}"), off_k, k))
    edit.graph.node.remove(av)
    edit.node_to("Sum", outs, [out], f"{name}{SUM_SUFFIX}")
