"""The PyTorch reference backend of the decoding loop (eager, fp32)."""

from __future__ import annotations

import torch

from sasq.models import LoadedModel
from sasq.models.var_blocks import KV


class TorchBackend:
    name = "torch"

    def __init__(self, model: LoadedModel):
        self.m = model
        self._mod: torch.Tensor | None = None  # every AdaLN modulation, (2B, 6 depth + 2, C)
        self._x: torch.Tensor | None = None  # this scale's input tokens (2B, l, C)
        self._past: list[KV] | None = None
        self._f_hat: torch.Tensor | None = None

    @torch.no_grad()
    def reset(self, label_2B: torch.Tensor) -> None:
        cond = self.m.var.class_cond(label_2B)
        self._mod = self.m.var.modulation(cond)
        self._x = self.m.var.first_input(cond)
        self._past, self._f_hat = None, None

    @torch.no_grad()
    def step(self, si: int) -> torch.Tensor:
        logits, self._past = self.m.var.decode_step(self._x, self._mod, self._past)
        return logits

    @torch.no_grad()
    def advance(self, si: int, idx_Bl: torch.Tensor, soft_BlV: torch.Tensor | None = None) -> None:
        q = self.m.vqvae.quantize
        if soft_BlV is None:
            self._f_hat = q.add_scale(si, self._f_hat, idx_Bl)
        else:  # more_smooth: a mix of codebook entries (the official batched matmul)
            h_BlCv = soft_BlV @ q.embedding.weight.unsqueeze(0)
            self._f_hat = q.add_embedding(si, self._f_hat, h_BlCv)
        if si < q.SN - 1:
            self._x = self.m.var.embed_input(si + 1, q.next_input(si, self._f_hat)).repeat(2, 1, 1)

    @torch.no_grad()
    def image(self) -> torch.Tensor:
        return self.m.vqvae.fhat_to_img(self._f_hat)
