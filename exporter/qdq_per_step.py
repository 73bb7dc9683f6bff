"""Static per-step (token-wise, PTQ4ARVG) activation scales as a row scaling around a
fixed-scale Q/DQ, because TensorRT needs Q/DQ scales that are build-time constants:

    y = (DQ(Q(x * (1/r_si), s)) @ W) * r_si,   s = amax_all / 127,  r_si = amax_si / amax_all

so step si quantizes x on the grid of its own range amax_si, and the row scaling commutes
with the GEMM because r_si is one number per step. r comes from a constant table indexed
by the step; the step comes from the length of a graph input (the KV cache's past length
in VAR's step graph, unique per scale) through a constant lookup. Any length that is no
calibrated step, and any step whose range was not observed, gets r = 1 (the fixed scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from sasq.exporter.qdq_edit import GraphEdit
from sasq.quant.cache import TensorRange


@dataclass(frozen=True)
class StepKey:
    """The graph input ``tensor`` has length ``lengths[si]`` along ``axis`` at step si."""

    tensor: str
    axis: int
    lengths: tuple[int, ...]


def step_index(edit: GraphEdit, key: StepKey, base: str) -> str:
    """A [1] int64 tensor: the step si whose length ``key`` finds in the graph, or
    len(key.lengths) (one row past the last step) for any other length."""
    lookup = np.full(max(key.lengths) + 2, len(key.lengths), np.int64)
    for si, n in enumerate(key.lengths):
        lookup[n] = si
    n = edit.node("Shape", [key.tensor], f"{base}_len", start=key.axis, end=key.axis + 1)[0]
    last = edit.const(f"{base}_last", np.array([len(lookup) - 1], np.int64))
    n = edit.node("Min", [n, last], f"{base}_clamp")[0]  # longer: no step
    return edit.node("Gather", [edit.const(f"{base}_lookup", lookup), n], base)[0]


def step_ratios(r: TensorRange, n_steps: int) -> np.ndarray | None:
    """amax_si / amax_all per step (1 where a step saw nothing); None if no per-step data."""
    if len(r.steps) != n_steps or r.amax <= 0:
        return None
    steps = np.asarray(r.steps, np.float64)
    return np.where(steps > 0, steps / r.amax, 1.0).astype(np.float32)


class PerStepScaling:
    """Adds the step lookup once, then 1/r before and r after the quantized GEMMs."""

    def __init__(self, edit: GraphEdit, key: StepKey):
        self.edit, self.key = edit, key
        self._si: str | None = None
        self._ratios: dict[str, tuple[str, str] | None] = {}

    def _step(self) -> str:
        if self._si is None:
            self._si = step_index(self.edit, self.key, "per_step")
        return self._si

    def ratios(self, x: str, r: TensorRange) -> tuple[str, str] | None:
        """(1/r_si, r_si) for tensor x as [1] tensors of this step, or None (fixed scale)."""
        if x not in self._ratios:
            ratio = step_ratios(r, len(self.key.lengths))
            if ratio is None or np.allclose(ratio, 1.0):
                self._ratios[x] = None
            else:
                e = self.edit
                table = np.append(ratio, np.float32(1.0))
                inv = e.node("Gather", [e.const(f"{x}_inv_r", 1 / table), self._step()],
                             f"{x}_inv_r_row")[0]  # fmt: skip
                fwd = e.node("Gather", [e.const(f"{x}_r", table), self._step()], f"{x}_r_row")[0]
                self._ratios[x] = (inv, fwd)
        return self._ratios[x]

    def rescale_output(self, node: onnx.NodeProto, ratios: list[str]) -> None:
        """node's output y becomes y * r1 * r2 ... (same name for its users)."""
        if not ratios:
            return
        out = node.output[0]
        y = node.output[0] = self.edit.fresh(f"{out}_per_step")
        for i, r in enumerate(ratios):
            last = i == len(ratios) - 1
            if last:
                self.edit.node_to("Mul", [y, r], [out], f"{out}_row_scale")
            else:
                y = self.edit.node("Mul", [y, r], f"{out}_row_scale")[0]
