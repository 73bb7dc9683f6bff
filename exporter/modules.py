"""Small nn.Modules that cut the reference model into the exported graphs.

Each wraps pieces of ``sasq.models`` without changing their math, except the two resamplings
of the VQ transition, which become constant matrices: area downsampling
(``F.interpolate(mode='area')`` = adaptive average pooling) exports poorly for sizes that do
not divide, and bicubic upsampling of a fixed pn x pn map is a fixed linear map too. A
matrix built by applying torch's own resampling to the one-hot basis (in float64) is the
exact same map, so one MatMul reproduces torch within float32 round-off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sasq.models import LoadedModel


def _basis_map(n_in: int, fn) -> torch.Tensor:
    """Matrix (n_in*n_in, n_out*n_out) of the linear map ``fn`` on (N, 1, n_in, n_in) maps."""
    eye = torch.eye(n_in * n_in, dtype=torch.float64).reshape(n_in * n_in, 1, n_in, n_in)
    out = fn(eye)
    return out.reshape(n_in * n_in, -1).float()


def bicubic_matrix(pn: int, H: int) -> torch.Tensor:
    """(pn^2, H^2): ``h_BCl @ M`` = ``F.interpolate(h, (H, H), mode='bicubic')`` flattened."""
    return _basis_map(pn, lambda x: F.interpolate(x, size=(H, H), mode="bicubic"))


def area_matrix(H: int, pn: int) -> torch.Tensor:
    """(H^2, pn^2): ``f_BCL @ M`` = ``F.interpolate(f, (pn, pn), mode='area')`` flattened."""
    return _basis_map(H, lambda x: F.interpolate(x, size=(pn, pn), mode="area"))


class Start(nn.Module):
    """label_2B -> (mod_BMC, x_BlC): every AdaLN modulation of the condition (computed once
    per image, not once per scale) and scale 0's start tokens."""

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.var = model.var

    def forward(self, label_2B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond_BD = self.var.class_cond(label_2B)
        return self.var.modulation(cond_BD), self.var.first_input(cond_BD)


class Step(nn.Module):
    """One decode step at any scale: (x_BlC, mod_BMC, past K/V...) -> (logits, present K/V...).

    The per-layer caches are flat positional inputs/outputs (key_0, value_0, key_1, ...) so
    each gets its own ONNX name.
    """

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.var = model.var

    def forward(self, x_BlC: torch.Tensor, mod_BMC: torch.Tensor, *past: torch.Tensor):
        kv = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits_BlV, present = self.var.decode_step(x_BlC, mod_BMC, kv)
        return (logits_BlV, *(t for k_v in present for t in k_v))


class NextScale(nn.Module):
    """Scale si's sampled tokens -> updated f_hat and (for si < SN-1) scale si+1's tokens.

    f_hat_out = f_hat + phi_si(upsample(codebook[idx_Bl]))
    x_BlC     = word_embed(area_down(f_hat_out) to pn_{si+1}) + lvl_pos(si+1), twice (CFG)

    ``soft``: the ``more_smooth`` variant takes codebook weights soft_BlV (B, l, V) instead
    of indices and uses ``soft_BlV @ codebook`` in place of the lookup.
    """

    def __init__(self, model: LoadedModel, si: int, soft: bool = False):
        super().__init__()
        q, var = model.vqvae.quantize, model.var
        pns = q.patch_nums
        self.si, self.last, self.soft = si, si == len(pns) - 1, soft
        self.Cvae, self.H = q.Cvae, pns[-1]
        self.codebook = q.embedding
        self.phi = q.phi(si)
        self.register_buffer("up_lL", None if self.last else bicubic_matrix(pns[si], self.H))
        self.register_buffer("down_Ll", None)
        if not self.last:
            pn1 = pns[si + 1]
            if pn1 != self.H:
                self.down_Ll = area_matrix(self.H, pn1)
            self.word_embed = var.word_embed
            self.register_buffer("lvl_pos_1lC", var.lvl_pos(si + 1).detach().clone())

    def forward(self, idx_or_soft: torch.Tensor, f_hat: torch.Tensor):
        B, H = idx_or_soft.shape[0], self.H
        if self.soft:
            h_BlCv = idx_or_soft @ self.codebook.weight.unsqueeze(0)
        else:
            h_BlCv = self.codebook(idx_or_soft)
        h_BCl = h_BlCv.transpose(1, 2)
        if self.up_lL is not None:
            h_BCl = h_BCl @ self.up_lL
        f_hat_out = f_hat + self.phi(h_BCl.reshape(B, self.Cvae, H, H))
        if self.last:
            return f_hat_out
        z_BCl = f_hat_out.reshape(B, self.Cvae, H * H)
        if self.down_Ll is not None:
            z_BCl = z_BCl @ self.down_Ll
        x_BlC = self.word_embed(z_BCl.transpose(1, 2)) + self.lvl_pos_1lC
        return f_hat_out, torch.cat((x_BlC, x_BlC), dim=0)


class Decoder(nn.Module):
    """f_hat -> image in [-1, 1]."""

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.vqvae = model.vqvae

    def forward(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.vqvae.fhat_to_img(f_hat)
