"""Shift-and-sum attention: the math, the token selection, and the expanded graph.

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
count in VAR's decoding loop). Branch 0 is the plain AV product over all S keys with the
value rows of the selected positions zeroed (a mask on V, so the probabilities, B*H*l*S and
the larger operand at the fine scales, pass through no extra elementwise op); branch 1
gathers every copy of each selected position (position j repeated n_j times, each entry
with its own shift and 1/n weight; padded with a zero-weight dummy so it is never empty):
value rows by a Gather, probability columns by gathering the few distinct positions and a
small float MatMul that repeats and weights them (a Gather of every copy along the last
axis, element by element, cost more than the AV product itself on VAR-d16).
Each branch has its own Q/DQ (same scales) and MatMul; a Sum adds them. ``fuse_shift_sum``
merges the branches into one MatMul over the concatenated keys.

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


def extra_columns(n: np.ndarray, graph: bool) -> int:
    """Key columns n adds: sum(n - 1) extra copies in the paper's accounting; in sasq's graph
    every copy of a selected position is a column of branch 1 (its row in branch 0 is masked
    to zero instead), so each selected position adds n."""
    n = np.asarray(n)
    return int((n - 1).sum() + ((n > 1).sum() if graph else 0))


def choose_copies(attn: Sequence[float], cap: int, max_n: int, graph: bool = False) -> np.ndarray:
    """Copies per key position with ``extra_columns(n, graph) <= cap`` and theta as small as
    that allows. The extra work only grows as theta falls, and it changes only at the
    breakpoints theta = a_j / 2^m, so those are tried from the largest down."""
    a = np.asarray(attn, dtype=np.float64)
    best = np.ones(len(a), dtype=np.int64)
    if cap <= 0 or max_n == 1 or len(a) == 0:
        return best
    m = np.arange(int(math.log2(max_n)) + 1)
    thetas = np.unique((a[:, None] / 2.0 ** m[None, :]).ravel())[::-1]
    for theta in thetas[thetas > 0]:
        n = copies_for(a, theta, max_n)
        if extra_columns(n, graph) > cap:
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
        """Key columns the graph adds at step si (see ``extra_columns``)."""
        return extra_columns(self.n_steps[si], graph=True)


def plan_layer(node: str, attn_steps, cfg: ShiftSumConfig, caps: Sequence[int]) -> LayerPlan:
    """The selection of one layer from its calibrated attention per step."""
    out = []
    for si, a in enumerate(attn_steps):
        if cfg.mode == ShiftSumMode.ALL2:
            out.append(np.full(len(a), min(2, cfg.max_n), dtype=np.int64))
        else:
            out.append(choose_copies(a, caps[si], cfg.max_n, graph=True))
    return LayerPlan(node, tuple(out))


# ----- the expanded graph -----


def _tables(plan: LayerPlan, s: float, p_scale: float):
    """Per step (plus a last 'no copies' row): branch 0's value-row mask (0 where a position
    has copies); for the extra branch (if any copies) the gathered positions (one entry per
    copy of a selected position) with their shifts, weights and offsets, and the number of
    entries per step."""
    SN = len(plan.n_steps)
    S_max = max(len(n) for n in plan.n_steps)
    keep0 = np.ones((SN + 1, S_max), np.float32)
    for si, n in enumerate(plan.n_steps):
        keep0[si, : len(n)] = (n == 1).astype(np.float32)
    branches = []
    if plan.max_n > 1:  # one branch with every copy (c = 0..n-1) of each selected position
        rows = [[(j, cp) for j in range(len(n)) if n[j] > 1 for cp in range(int(n[j]))]
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
        # Probability columns: the few distinct positions are gathered (ORT's Gather along
        # the last axis copies element by element, so it should output few columns), then
        # a small matrix repeats each into its copies with weight 1/n: (P[..., uniq]) @ pick.
        uniq_rows = [sorted({j for j, _ in r}) or [0] for r in rows] + [[0]]
        J = max(len(u) for u in uniq_rows)
        uniq = np.zeros((SN + 1, J), np.int64)
        n_uniq = np.array([len(u) for u in uniq_rows], np.int64)
        pick = np.zeros((SN + 1, J, E), np.float32)
        for si, u in enumerate(uniq_rows):
            uniq[si, : len(u)] = u
            at = {j: k for k, j in enumerate(u)}
            for e in range(len(rows[si]) if si < SN else 0):
                pick[si, at[int(idx[si, e])], e] = w[si, e]
        branches.append((idx, sh, (uniq, n_uniq, pick), off, length))
    return keep0, branches


def expand_av(
    edit: GraphEdit,
    av: onnx.NodeProto,
    plan: LayerPlan,
    v_scale: float,
    qdq,
    p_scale: float,
    prob_shift: bool = True,
) -> list[str]:
    """Replace the AV node ``av`` by shift-and-sum branches and a Sum; return the float
    MatMuls it made (the weighted column picks, which TensorRT runs in float).

    ``qdq(x, scale, base) -> name`` writes one activation Q/DQ pair (the writer's, so bit
    widths and clipping match the rest of the graph)."""
    p, v, out = av.input[0], av.input[1], av.output[0]
    name = av.name or edit.fresh("av")
    steps_S = [len(n) for n in plan.n_steps]
    SN = len(steps_S)
    step_of_S = np.full(max(steps_S) + 2, SN, np.int64)
    for si, S in enumerate(steps_S):
        step_of_S[S] = si
    keep0, branches = _tables(plan, v_scale, p_scale)
    c = edit.const
    S = edit.node("Shape", [v], f"{name}_S", start=-2, end=-1)[0]
    si = edit.node("Gather", [c(f"{name}_step_of_S", step_of_S), S], f"{name}_step")[0]
    zero1, ax1 = (
        c(f"{name}_zero", np.array([0], np.int64)),
        c(f"{name}_ax1", np.array([1], np.int64)),
    )

    def row(table: np.ndarray, length: str, what: str) -> str:
        """table[step, :length] as a [1, length] tensor."""
        r = edit.node("Gather", [c(f"{name}_{what}", table), si], f"{name}_{what}_row")[0]
        return edit.node("Slice", [r, zero1, length, ax1], f"{name}_{what}_sl")[0]

    def branch(v_in: str, p_w: str, sh: str, off: str | None, k: int) -> str:
        sh_col = edit.node("Reshape", [sh, col], f"{name}_b{k}_shcol")[0]
        v_sh = edit.node("Add", [v_in, sh_col], f"{name}_b{k}_vshift")[0]
        if off is not None:
            p_w = edit.node("Add", [p_w, off], f"{name}_b{k}_pshift")[0]
        vq, pq = qdq(v_sh, v_scale, f"{name}_b{k}_v"), qdq(p_w, p_scale, f"{name}_b{k}_p")
        return edit.node("MatMul", [pq, vq], f"{name}_b{k}")[0]

    def offsets(table: np.ndarray, length: str, what: str) -> str | None:
        return row(table, length, what) if prob_shift else None

    v0 = v
    if branches:  # selected positions contribute through branch 1 only
        col = c(f"{name}_col", np.array([-1, 1], np.int64))
        zero2 = c(f"{name}_zero2", np.array([0, 0], np.int64))
        ax12 = c(f"{name}_ax12", np.array([1, 2], np.int64))
        flat = c(f"{name}_flat", np.array([-1], np.int64))
        keep = edit.node("Reshape", [row(keep0, S, "keep0"), col], f"{name}_b0_keepcol")[0]
        v0 = edit.node("Mul", [v, keep], f"{name}_b0_vmask")[0]
    vq, pq = qdq(v0, v_scale, f"{name}_b0_v"), qdq(p, p_scale, f"{name}_b0_p")
    outs = [edit.node("MatMul", [pq, vq], f"{name}_b0")[0]]
    picks = []
    for k, (idx, sh, (uniq, n_uniq, pick), off, length) in enumerate(branches, start=1):
        E = edit.node("Gather", [c(f"{name}_len{k}", length), si], f"{name}_E{k}")[0]
        ix = edit.node("Reshape", [row(idx, E, f"idx{k}"), flat], f"{name}_ix{k}")[0]
        v_k = edit.node("Gather", [v, ix], f"{name}_v{k}", axis=-2)[0]
        J = edit.node("Gather", [c(f"{name}_nuniq{k}", n_uniq), si], f"{name}_J{k}")[0]
        ux = edit.node("Reshape", [row(uniq, J, f"uniq{k}"), flat], f"{name}_ux{k}")[0]
        p_d = edit.node("Gather", [p, ux], f"{name}_pd{k}", axis=-1)[0]
        pk = edit.node("Gather", [c(f"{name}_pick{k}", pick), si], f"{name}_pick{k}_step")[0]
        JE = edit.node("Concat", [J, E], f"{name}_JE{k}", axis=0)[0]
        pk = edit.node("Slice", [pk, zero2, JE, ax12], f"{name}_pick{k}_sl")[0]
        pk = edit.node("Reshape", [pk, JE], f"{name}_pick{k}_JE")[0]  # drops the step axis
        p_k = edit.node("MatMul", [p_d, pk], f"{name}_p{k}")[0]
        picks.append(edit.graph.node[-1].name)
        off_k = offsets(off, E, f"off{k}")
        outs.append(branch(v_k, p_k, row(sh, E, f"shift{k}"), off_k, k))
    edit.graph.node.remove(av)
    edit.node_to("Sum", outs, [out], f"{name}{SUM_SUFFIX}")
    return picks
