"""The multi-scale decoding loop, shared by every backend.

The host does only what must stay on the host: classifier-free guidance mixing and top-k /
top-p sampling with one seeded generator (and, with ``more_smooth``, the Gumbel-softmax
weights drawn from it). A backend owns all model compute and state: the transformer step of
each scale with its KV cache, turning the sampled indices into the next scale's input
(codebook lookup, phi refinement, area downsampling, word embedding), and the VQVAE
decoder. Since the generator is the same for every backend, equal logits give equal tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from sasq.errors import UserError
from sasq.models.config import SamplingConfig
from sasq.models.sampling import (
    cfg_mix,
    cfg_ramp,
    filter_logits,
    sample_filtered,
    smooth_weights,
)


class StepBackend(Protocol):
    """What a backend provides to the loop; its batch is [conditional; unconditional]."""

    name: str

    def reset(self, label_2B: torch.Tensor) -> None:
        """Start a batch: condition and start tokens from the labels, empty KV cache."""

    def step(self, si: int) -> torch.Tensor:
        """Run scale si on the current input; logits (2B, pn*pn, V) as a float32 tensor."""

    def advance(self, si: int, idx_Bl: torch.Tensor, soft_BlV: torch.Tensor | None = None) -> None:
        """Add scale si's sampled tokens (B, pn*pn) to the latent; prepare scale si+1. With
        ``soft_BlV`` (more_smooth) the latent gets ``soft_BlV @ codebook`` instead."""

    def image(self) -> torch.Tensor:
        """Decode the summed latent: images (B, C, H, W) in [-1, 1]."""


# Called after sampling at each scale with (si, sampled idx_Bl, CFG-mixed logits_BlV); returns
# the tokens to keep. Teacher forcing, editing and calibration resampling plug in here.
TokenHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def forced_one_hot(
    soft_BlV: torch.Tensor, drawn_Bl: torch.Tensor, idx_Bl: torch.Tensor
) -> torch.Tensor:
    """Smoothed weights where the sampled token was kept; one-hot where a hook replaced it
    (teacher forcing, editing): a forced token enters the latent exactly."""
    forced_Bl = idx_Bl != drawn_Bl
    if not bool(forced_Bl.any()):
        return soft_BlV
    one_hot = torch.nn.functional.one_hot(idx_Bl, soft_BlV.shape[-1]).to(soft_BlV.dtype)
    return torch.where(forced_Bl.unsqueeze(-1), one_hot, soft_BlV)


@dataclass
class Generation:
    idx: list[torch.Tensor]  # per scale, (B, pn*pn) int64
    img: torch.Tensor  # (B, C, H, W) in [-1, 1]
    logits: list[torch.Tensor] = field(default_factory=list)  # per scale (2B, l, V) if kept


@torch.no_grad()
def generate(
    backend: StepBackend,
    labels_B: torch.Tensor,
    patch_nums: tuple[int, ...],
    sampling: SamplingConfig,
    seed: int,
    num_classes: int,
    keep_logits: bool = False,
    hook: TokenHook | None = None,
) -> Generation:
    """Class-conditional generation of len(labels_B) images, deterministic under ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    labels_B = labels_B.long()
    backend.reset(torch.cat((labels_B, torch.full_like(labels_B, num_classes))))
    SN = len(patch_nums)
    idx_list, logits_list = [], []
    for si in range(SN):
        logits = backend.step(si).float()
        _require_finite(logits, backend, f"logits at scale {si}")
        if keep_logits:
            logits_list.append(logits)
        mixed_BlV = cfg_mix(logits, cfg_ramp(sampling.cfg, si, SN))
        filtered_BlV = filter_logits(mixed_BlV, sampling.top_k, sampling.top_p)
        drawn_Bl = sample_filtered(filtered_BlV, gen)
        idx_Bl = drawn_Bl if hook is None else hook(si, drawn_Bl, mixed_BlV)
        idx_list.append(idx_Bl)
        if sampling.more_smooth:
            soft_BlV = smooth_weights(filtered_BlV, si, SN, gen)
            backend.advance(si, idx_Bl, forced_one_hot(soft_BlV, drawn_Bl, idx_Bl))
        else:
            backend.advance(si, idx_Bl)
    img = backend.image()
    _require_finite(img, backend, "decoded images")
    return Generation(idx_list, img, logits_list)


def _require_finite(t: torch.Tensor, backend: StepBackend, what: str) -> None:
    """NaN/Inf would be sampled into garbage tokens (or crash torch.multinomial) and decode
    to black images: stop with one line instead. Weights and scales are checked where they
    are read; this catches whatever got past (an export's own weights, say)."""
    # numpy's check is a twentieth of torch's here (17 ms vs 0.9 ms over a VAR-d16 image's
    # logits), and torch's spreads over threads that the sessions are using
    cpu = t.device.type == "cpu"
    finite = np.isfinite(t.detach().float().numpy()).all() if cpu else torch.isfinite(t).all()
    if not bool(finite):
        raise UserError(
            f"{backend.name} backend: non-finite {what} (NaN/Inf); the model or export holds "
            "non-finite weights or scales"
        )


@dataclass(frozen=True)
class Row:
    """One image of a served batch: its label, its own seed and its own sampling."""

    label: int
    seed: int
    sampling: SamplingConfig


@torch.no_grad()
def generate_rows(
    backend: StepBackend,
    rows: list[Row],
    patch_nums: tuple[int, ...],
    num_classes: int,
    more_smooth: bool = False,
) -> Generation:
    """Decode ``rows`` as one batch, each with its own generator, CFG, top-k and top-p.

    Row b's tokens and image are those ``generate`` gives for its label alone under its seed
    (``sasq generate --n 1 --seed S``): the host mixes and samples row b's [cond; uncond]
    logit pair exactly as ``generate`` does for a batch of one, from row b's own generator.
    That holds as long as the backend computes a row's logits independently of the rows
    beside it (bitwise), which ``tests/test_serve.py`` checks for ONNX Runtime on CPU.
    ``more_smooth`` is one setting for the whole batch (the backend takes one latent form)."""
    B, SN = len(rows), len(patch_nums)
    gens = [torch.Generator().manual_seed(r.seed) for r in rows]
    labels_B = torch.tensor([r.label for r in rows], dtype=torch.long)
    backend.reset(torch.cat((labels_B, torch.full_like(labels_B, num_classes))))
    idx_list = []
    for si in range(SN):
        logits = backend.step(si).float()
        _require_finite(logits, backend, f"logits at scale {si}")
        idx_rows, soft_rows = [], []
        for b, (row, gen) in enumerate(zip(rows, gens, strict=True)):
            s = row.sampling
            mixed_1lV = cfg_mix(logits[[b, B + b]], cfg_ramp(s.cfg, si, SN))
            filtered_1lV = filter_logits(mixed_1lV, s.top_k, s.top_p)
            idx_rows.append(sample_filtered(filtered_1lV, gen))
            if more_smooth:
                soft_rows.append(smooth_weights(filtered_1lV, si, SN, gen))
        idx_Bl = torch.cat(idx_rows)
        idx_list.append(idx_Bl)
        backend.advance(si, idx_Bl, torch.cat(soft_rows) if more_smooth else None)
    img = backend.image()
    _require_finite(img, backend, "decoded images")
    return Generation(idx_list, img)
