"""Shift-and-sum on the int8 KV cache: a selected key token's shifted value copies are made
from its unrounded value when the token is appended, and stored in a second value cache.

The math is ``shift_sum``'s: a token with n copies contributes (1/n) sum_c p DQ(Q(v + d_c)),
d_c = (2c+1-n) s/(2n). What changes with a cache is *when* the copies are made: a token's
value is quantized once, at the step that appends it, so its number of copies is fixed
from then on (per layer and key position, no longer per step), and the copies cost cache
memory as well as work.

Selection (``plan_cache_layer``): a position's score is the most attention it receives at
any step that sees it (calibration's mean over queries, per step); n = 2^clamp(ceil(log2
(score / theta)), 0, log2 max_n) with theta as small as both caps allow:
- work: at every step, the copy columns of the positions seen so far (n per selected
  position, ``extra_columns(graph=True)``) stay within that step's share of the budget;
- memory: the copies stored, sum n, stay within ``cache_fraction`` of the cache's rows
  (K and V of every token).

In the graph, per block with copies (tables indexed by the step, found from the cache
length; one row past the last step means "no copies"):
- append: the selected new tokens' rows of the main value cache are stored as 0 (a mask
  on the l new rows: those tokens contribute through their copies only), and their copies
  ``Q(v + d_c)`` are appended to ``past_vcopy_i`` -> ``present_vcopy_i`` (int8);
- read: the probabilities of the few distinct selected positions are gathered, repeated
  and weighted 1/n by a small float MatMul (plus the probability shifts of
  ``prob_shift``), quantized like the probabilities, and multiplied with the dequantized
  copies; the caller adds that product to the main AV product (``fuse_shift_sum`` merges
  the two into one GEMM for TensorRT).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sasq.exporter.qdq_config import ShiftSumConfig, ShiftSumMode
from sasq.exporter.qdq_edit import GraphEdit
from sasq.exporter.shift_sum import copies_for, extra_columns, shifts


@dataclass(frozen=True)
class CachePlan:
    """Copies of each key position of one block (``n[j]``, 1 = none), and the key count
    at the end of each step (positions [ends[si-1], ends[si]) are appended at step si)."""

    node: str
    n: np.ndarray
    ends: tuple[int, ...]

    @property
    def copies(self) -> int:
        """Value-cache rows the copies add per image row, at the end of decoding."""
        return int(self.n[self.n > 1].sum())

    @property
    def stored_before(self) -> tuple[int, ...]:
        """Rows of the copy cache when each step starts."""
        starts = (0, *self.ends[:-1])
        return tuple(int(self.n[:b][self.n[:b] > 1].sum()) for b in starts)

    def columns(self, si: int) -> int:
        """Extra AV key columns at step si."""
        return extra_columns(self.n[: self.ends[si]], graph=True)


def position_scores(attn_steps: Sequence[Sequence[float]]) -> np.ndarray:
    """Per key position: the most attention it receives (mean over queries) at any step."""
    L = max(len(a) for a in attn_steps)
    score = np.zeros(L)
    for a in attn_steps:
        a = np.asarray(a, np.float64)
        score[: len(a)] = np.maximum(score[: len(a)], a)
    return score


def plan_cache_layer(
    node: str,
    attn_steps: Sequence[Sequence[float]],
    cfg: ShiftSumConfig,
    caps: Sequence[int],
    rows_cap: int,
) -> CachePlan:
    """The copies of one block under the work caps per step and the cache-rows cap."""
    ends = tuple(len(a) for a in attn_steps)
    score = position_scores(attn_steps)
    if cfg.mode == ShiftSumMode.ALL2:
        return CachePlan(node, np.full(len(score), min(2, cfg.max_n), np.int64), ends)
    best = np.ones(len(score), np.int64)
    if cfg.max_n == 1 or rows_cap <= 0:
        return CachePlan(node, best, ends)
    m = np.arange(int(math.log2(cfg.max_n)) + 1)
    thetas = np.unique((score[:, None] / 2.0 ** m[None, :]).ravel())[::-1]
    for theta in thetas[thetas > 0]:  # smaller theta: more copies, never fewer
        n = copies_for(score, theta, cfg.max_n)
        plan = CachePlan(node, n, ends)
        if plan.copies > rows_cap or any(plan.columns(si) > c for si, c in enumerate(caps)):
            break
        best = n
    return CachePlan(node, best, ends)


@dataclass(frozen=True)
class _Tables:
    keep: np.ndarray  # [SN+1, l_max] 1 for new tokens stored in the main cache, 0 if copied
    new_idx: np.ndarray  # [SN+1, E_max] new-token index of each copy appended at the step
    new_shift: np.ndarray  # [SN+1, E_max] its shift d_c
    n_new: np.ndarray  # [SN+1] copies appended at the step
    uniq: np.ndarray  # [SN+1, J_max] distinct selected key positions seen at the step
    n_uniq: np.ndarray  # [SN+1]
    pick: np.ndarray  # [SN+1, J_max, C_max] weight 1/n from a position to each of its copies
    offset: np.ndarray  # [SN+1, C_max] probability shift of each stored copy


def _tables(plan: CachePlan, v_scale: float, p_scale: float) -> _Tables:
    SN, n = len(plan.ends), plan.n
    starts = (0, *plan.ends[:-1])
    l_max = max(e - b for b, e in zip(starts, plan.ends, strict=True))
    copies = [  # (position, copy rank) in the order they are appended, step by step
        [(j, c) for j in range(b, e) if n[j] > 1 for c in range(int(n[j]))]
        for b, e in zip(starts, plan.ends, strict=True)
    ]
    E_max = max(1, max(len(c) for c in copies))
    C_max = max(1, sum(len(c) for c in copies))
    stored = [cp for step in copies for cp in step]  # the copy cache's rows, in order
    uniq_rows = [sorted({j for j, _ in stored if j < end}) for end in plan.ends] + [[]]
    J_max = max(1, max(len(u) for u in uniq_rows))
    t = _Tables(
        keep=np.ones((SN + 1, l_max), np.float32),
        new_idx=np.zeros((SN + 1, E_max), np.int64),
        new_shift=np.zeros((SN + 1, E_max), np.float32),
        n_new=np.zeros(SN + 1, np.int64),
        uniq=np.zeros((SN + 1, J_max), np.int64),
        n_uniq=np.array([len(u) for u in uniq_rows], np.int64),
        pick=np.zeros((SN + 1, J_max, C_max), np.float32),
        offset=np.zeros((SN + 1, C_max), np.float32),
    )
    for si, (b, e) in enumerate(zip(starts, plan.ends, strict=True)):
        t.keep[si, : e - b] = (n[b:e] == 1).astype(np.float32)
        t.n_new[si] = len(copies[si])
        for k, (j, c) in enumerate(copies[si]):
            t.new_idx[si, k] = j - b
            t.new_shift[si, k] = shifts(int(n[j]), v_scale)[c]
    for si, u in enumerate(uniq_rows):
        t.uniq[si, : len(u)] = u
        at = {j: k for k, j in enumerate(u)}
        for row, (j, c) in enumerate(stored):
            if j in at:
                t.pick[si, at[j], row] = 1.0 / n[j]
                t.offset[si, row] = shifts(int(n[j]), p_scale)[c]
    return t


class CopyBranch:
    """The graph of one block's copies: ``append`` on the new values, ``read`` next to the
    AV product. ``store(x, base)`` quantizes to the cache's int8 (Q, Clip below 8 bits);
    ``dequant(x, base)`` is the cache's DQ; ``qdq_p(x, base)`` the probabilities' Q/DQ."""

    def __init__(self, edit: GraphEdit, plan: CachePlan, si: str, base: str,
                 v_scale: float, p_scale: float, prob_shift: bool):  # fmt: skip
        self.edit, self.si, self.base = edit, si, base
        self.t = _tables(plan, v_scale, p_scale)
        self.prob_shift = prob_shift
        c = edit.const
        self._zero, self._ax1 = (
            c(f"{base}_zero", np.array([0], np.int64)),
            c(f"{base}_ax1", np.array([1], np.int64)),
        )
        self._col, self._flat = (
            c(f"{base}_col", np.array([-1, 1], np.int64)),
            c(f"{base}_flat", np.array([-1], np.int64)),
        )

    def _row(self, table: np.ndarray, length: str, what: str) -> str:
        """table[step, :length], flattened to 1-D."""
        e, b = self.edit, f"{self.base}_{what}"
        r = e.node("Gather", [e.const(b, table), self.si], f"{b}_row")[0]
        r = e.node("Slice", [r, self._zero, length, self._ax1], f"{b}_sl")[0]
        return e.node("Reshape", [r, self._flat], f"{b}_flat")[0]

    def _count(self, table: np.ndarray, what: str) -> str:
        e, b = self.edit, f"{self.base}_{what}"
        return e.node("Gather", [e.const(b, table), self.si], f"{b}_row")[0]

    def append(self, v_new: str, past: str, present: str, store: Callable[[str, str], str]) -> str:
        """Append this step's copies to the copy cache (writes ``present``); returns the
        new values to store in the main cache (selected tokens' rows zeroed)."""
        e, b = self.edit, self.base
        l_len = e.node("Shape", [v_new], f"{b}_l", start=-2, end=-1)[0]
        keep = e.node("Reshape", [self._row(self.t.keep, l_len, "keep"), self._col],
                      f"{b}_keepcol")[0]  # fmt: skip
        v_main = e.node("Mul", [v_new, keep], f"{b}_vmask")[0]
        E = self._count(self.t.n_new, "n_new")
        idx = self._row(self.t.new_idx, E, "new_idx")
        v_c = e.node("Gather", [v_new, idx], f"{b}_vcopy", axis=-2)[0]
        sh = e.node("Reshape", [self._row(self.t.new_shift, E, "shift"), self._col],
                    f"{b}_shiftcol")[0]  # fmt: skip
        v_sh = e.node("Add", [v_c, sh], f"{b}_vshift")[0]
        e.node_to("Concat", [past, store(v_sh, f"{b}_vcopy")], [present], f"{b}_append", axis=2)
        return v_main

    def read(self, probs: str, present: str, dequant, qdq_p) -> str:
        """The copies' share of the AV product: (P[..., uniq] @ pick (+ offsets)) @ DQ(copies)."""
        e, b = self.edit, self.base
        J = self._count(self.t.n_uniq, "n_uniq")
        C = e.node("Shape", [present], f"{b}_C", start=2, end=3)[0]
        p_d = e.node("Gather", [probs, self._row(self.t.uniq, J, "uniq")], f"{b}_pd", axis=-1)[0]
        JC = e.node("Concat", [J, C], f"{b}_JC", axis=0)[0]
        pk = e.node("Gather", [e.const(f"{b}_pick", self.t.pick), self.si], f"{b}_pick_row")[0]
        zero2, ax12 = (
            e.const(f"{b}_zero2", np.zeros(2, np.int64)),
            e.const(f"{b}_ax12", np.array([1, 2], np.int64)),
        )
        pk = e.node("Slice", [pk, zero2, JC, ax12], f"{b}_pick_sl")[0]
        pk = e.node("Reshape", [pk, JC], f"{b}_pick_JC")[0]
        p_c = e.node("MatMul", [p_d, pk], f"{b}_pick_mm")[0]
        self.pick_node = e.graph.node[-1].name
        if self.prob_shift:
            p_c = e.node("Add", [p_c, self._row(self.t.offset, C, "offset")], f"{b}_pshift")[0]
        return e.node("MatMul", [qdq_p(p_c, f"{b}_p"), dequant(present, f"{b}_v")], f"{b}_av")[0]
