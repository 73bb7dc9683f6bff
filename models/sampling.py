"""Host-side sampling: classifier-free guidance mixing, top-k / top-p filtering, and the
official ``more_smooth`` Gumbel-softmax weights.

Shared by every backend so the same seed gives the same tokens whatever computed the logits.
"""

from __future__ import annotations

import torch


def cfg_ramp(cfg: float, si: int, num_scales: int) -> float:
    """Guidance grows linearly from 0 at the first scale to ``cfg`` at the last (VAR)."""
    return cfg * si / (num_scales - 1) if num_scales > 1 else cfg


def cfg_mix(logits_2BlV: torch.Tensor, t: float) -> torch.Tensor:
    """(1 + t) * conditional - t * unconditional; the batch holds [cond; uncond]."""
    B = logits_2BlV.shape[0] // 2
    return (1 + t) * logits_2BlV[:B] - t * logits_2BlV[B:]


def filter_logits(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Logits with everything outside the top-k and the top-p nucleus set to -inf."""
    out = logits_BlV.clone()
    V = out.shape[-1]
    if 0 < top_k < V:
        kth = out.topk(top_k, dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        out.masked_fill_(out < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = out.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False  # always keep the most likely token
        out.masked_fill_(remove.scatter(-1, sorted_idx, remove), -torch.inf)
    return out


def sample(
    logits_BlV: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per position, (B, l), drawn from the filtered softmax."""
    return sample_filtered(filter_logits(logits_BlV.float(), top_k, top_p), generator)


def sample_filtered(filtered_BlV: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per position, (B, l), from logits ``filter_logits`` already filtered."""
    B, l, V = filtered_BlV.shape
    probs = filtered_BlV.softmax(dim=-1)
    return torch.multinomial(probs.view(-1, V), 1, generator=generator).view(B, l)


def smooth_weights(
    filtered_BlV: torch.Tensor, si: int, num_scales: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``more_smooth`` (official demo): codebook weights (B, l, V) of a Gumbel-softmax over
    the filtered logits sharpened by (1 + r) at temperature max(0.27 (1 - 0.95 r), 0.005),
    r = si / (SN - 1) (MaskGIT's schedule): soft at coarse scales, near one-hot at fine ones.
    Drawn after the tokens, from the same generator, as the official loop does."""
    r = si / (num_scales - 1) if num_scales > 1 else 1.0
    tau = max(0.27 * (1 - r * 0.95), 0.005)
    gumbels_BlV = -torch.empty_like(filtered_BlV).exponential_(generator=generator).log()
    return ((filtered_BlV.mul(1 + r) + gumbels_BlV) / tau).softmax(dim=-1)
