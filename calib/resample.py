"""Codebook resampling for calibration rollouts (Shift-and-Sum paper).

With a handful of calibration images, the codebook entries sampled at a scale do not follow
the model's predicted distribution: some entries are drawn more often than their mean
probability says, others less. Activations recorded from those token maps then misrepresent
what the model sees on average. Resampling moves the token histogram of each scale onto the
mean predicted distribution before the tokens are teacher-forced:

1. target count of entry v = mean_n(probs[n, v]) * N, rounded by largest remainder so that
   the targets sum to exactly N;
2. an entry whose count exceeds its target is over-sampled, one below it under-sampled;
3. the excess tokens of over-sampled entries are redrawn, one at a time, from their own
   probabilities restricted to the entries still under target (renormalised). The token
   redrawn next is the one, among tokens of entries that still have excess, with the most
   probability mass on the entries still under target (ties: lowest position). Deficits are
   updated after every draw; a token with no mass left on any open deficit is never drawn,
   and resampling stops when no open deficit can be filled.

Tokens of under-sampled or exactly-sampled entries are never changed. ``probs`` are the
filtered probabilities the sampler used (top-k / top-p applied to the CFG-mixed logits), so
a token is only ever moved to an entry it could have been sampled as.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sasq.models.config import SamplingConfig
from sasq.models.sampling import filter_logits
from sasq.quant.settings import ResampleMode


def largest_remainder(real_V: torch.Tensor, total: int) -> torch.Tensor:
    """Non-negative integers summing to ``total``, each within 1 of ``real_V`` (which should
    sum to ``total``): floors first, then +1 for the largest fractional parts (ties: lowest
    index), so the rounding is deterministic."""
    real_V = real_V.double().clamp_min(0)
    floor_V = real_V.floor()
    counts_V = floor_V.long()
    missing = total - int(counts_V.sum())
    if missing > 0:
        order = torch.sort(real_V - floor_V, descending=True, stable=True).indices
        counts_V[order[:missing]] += 1
    return counts_V


def target_counts(probs_NV: torch.Tensor) -> torch.Tensor:
    """Per-entry target counts (V,) for N tokens: mean predicted probability times N."""
    N = probs_NV.shape[0]
    mean_V = probs_NV.double().mean(0)
    return largest_remainder(mean_V / mean_V.sum() * N, N)


def tv_distance(idx_N: torch.Tensor, probs_NV: torch.Tensor) -> float:
    """Total variation (0.5 * L1) between the normalised token histogram and the mean
    predicted distribution; 0 means the tokens follow the predictions exactly."""
    N, V = probs_NV.shape
    hist_V = torch.bincount(idx_N.flatten(), minlength=V).double() / N
    mean_V = probs_NV.double().mean(0)
    return 0.5 * float((hist_V - mean_V / mean_V.sum()).abs().sum())


def resample_scale(
    idx_N: torch.Tensor, probs_NV: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The resampled tokens (N,) of one scale; see the module docstring for the rule.

    Deterministic under ``generator`` (used only for the redraws).
    """
    N, V = probs_NV.shape
    idx_N = idx_N.flatten().long()  # probs stay in their dtype: N x V can be large
    count_V = torch.bincount(idx_N, minlength=V)
    target_V = target_counts(probs_NV)
    deficit_V = (target_V - count_V).clamp_min(0)
    excess_V = (count_V - target_V).clamp_min(0)
    out_N = idx_N.clone()
    if int(deficit_V.sum()) == 0:
        return out_N

    cand_C = (excess_V[idx_N] > 0).nonzero().flatten()  # tokens of over-sampled entries
    probs_CV = probs_NV[cand_C]
    # Each candidate's probability mass on the open deficits, kept up to date (float64).
    mass_C = (probs_CV * (deficit_V > 0)).sum(1, dtype=torch.float64)
    alive_C = torch.ones(len(cand_C), dtype=torch.bool)
    open_deficits = int((deficit_V > 0).sum())
    while open_deficits > 0:
        masked_C = torch.where(alive_C, mass_C, torch.full_like(mass_C, -1.0))
        j = int(masked_C.argmax())
        if masked_C[j] <= 0:
            break  # nobody left has probability on an open deficit
        alive_C[j] = False
        w_V = probs_CV[j] * (deficit_V > 0)
        if float(w_V.sum()) <= 0:  # round-off in mass_C; truly nothing to give
            continue
        old, new = int(idx_N[cand_C[j]]), int(torch.multinomial(w_V, 1, generator=generator))
        out_N[cand_C[j]] = new
        excess_V[old] -= 1
        deficit_V[new] -= 1
        if excess_V[old] == 0:  # the rest of this entry's tokens stay
            alive_C &= idx_N[cand_C] != old
        if deficit_V[new] == 0:
            mass_C -= probs_CV[:, new].double()
            open_deficits -= 1
    return out_N


@dataclass(frozen=True)
class ScaleTV:
    """One call of the hook: scale, number of tokens, TV before and after, tokens moved."""

    si: int
    n_tokens: int
    tv_before: float
    tv_after: float
    changed: int


class ResampleHook:
    """A ``TokenHook`` for ``sasq.engines.decode.generate``: resamples each scale's tokens of
    the whole batch jointly (N = B * pn^2) and returns them for teacher forcing.

    ``records`` keeps one ``ScaleTV`` per call (also in mode "none", where the tokens are
    returned unchanged) so a calibration report can show what resampling did per scale.
    The redraws use the hook's own generator (seeded once), not the sampler's, so the
    sampled tokens are the same with or without resampling.
    """

    def __init__(self, sampling: SamplingConfig, mode: ResampleMode | str, seed: int = 0):
        self.sampling = sampling
        self.mode = ResampleMode(mode)
        self.generator = torch.Generator().manual_seed(seed)
        self.records: list[ScaleTV] = []

    def __call__(self, si: int, idx_Bl: torch.Tensor, mixed_logits_BlV: torch.Tensor):
        V = mixed_logits_BlV.shape[-1]
        logits_BlV = filter_logits(
            mixed_logits_BlV.float(), self.sampling.top_k, self.sampling.top_p
        )
        probs_NV = logits_BlV.softmax(dim=-1).reshape(-1, V)
        idx_N = idx_Bl.reshape(-1)
        before = tv_distance(idx_N, probs_NV)
        if self.mode is ResampleMode.NONE:
            new_N = idx_N
        else:
            new_N = resample_scale(idx_N, probs_NV, self.generator)
        after = before if new_N is idx_N else tv_distance(new_N, probs_NV)
        changed = int((new_N != idx_N).sum())
        self.records.append(ScaleTV(si, idx_N.numel(), before, after, changed))
        return new_N.view_as(idx_Bl).to(idx_Bl.dtype)

    def tv_by_scale(self) -> dict[int, tuple[float, float]]:
        """Mean (TV before, TV after) per scale over all recorded calls."""
        out: dict[int, tuple[float, float]] = {}
        for si in sorted({r.si for r in self.records}):
            rs = [r for r in self.records if r.si == si]
            out[si] = (
                sum(r.tv_before for r in rs) / len(rs),
                sum(r.tv_after for r in rs) / len(rs),
            )
        return out
