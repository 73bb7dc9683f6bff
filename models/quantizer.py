"""Multi-scale residual vector quantizer with phi refinement convs (VAR's VectorQuantizer2).

An image latent f is quantized coarse to fine: at scale k the residual is area-downsampled
to pn_k x pn_k, snapped to the nearest codebook entry, upsampled back (bicubic), refined by
a phi conv and subtracted. The sum of the refined maps, f_hat, is what the decoder sees.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Phi(nn.Conv2d):
    """phi(h) = (1 - r) h + r conv3x3(h)."""

    def __init__(self, channels: int, resi_ratio: float):
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw * (1 - self.resi_ratio) + super().forward(h_BChw) * self.resi_ratio


class PhiPartiallyShared(nn.Module):
    """K phi convs shared over the scales; scale si of SN uses the one whose tick is nearest."""

    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        K = len(qresi_ls)
        self.ticks = (
            np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K)
            if K == 4
            else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)
        )

    def for_scale(self, si: int, SN: int) -> Phi:
        at = si / (SN - 1) if SN > 1 else 0.0
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - at)))]


class VectorQuantizer2(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        Cvae: int,
        patch_nums: tuple[int, ...],
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
        beta: float = 0.25,
    ):
        super().__init__()
        if share_quant_resi < 1:
            raise ValueError("only shared phi convs (share_quant_resi >= 1) are supported")
        self.vocab_size, self.Cvae, self.beta = vocab_size, Cvae, beta
        self.patch_nums = tuple(patch_nums)
        self.quant_resi = PhiPartiallyShared(
            nn.ModuleList(Phi(Cvae, quant_resi) for _ in range(share_quant_resi))
        )
        # Usage statistics of the official training; kept so checkpoints load strictly.
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.embedding = nn.Embedding(vocab_size, Cvae)

    @property
    def SN(self) -> int:
        return len(self.patch_nums)

    def phi(self, si: int) -> Phi:
        return self.quant_resi.for_scale(si, self.SN)

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        E_VC = self.embedding.weight
        d_NV = z_NC.square().sum(1, keepdim=True) + E_VC.square().sum(1) - 2 * z_NC @ E_VC.T
        return d_NV.argmin(dim=1)

    def _upsample(self, h_BChw: torch.Tensor, si: int) -> torch.Tensor:
        H = self.patch_nums[-1]
        if si == self.SN - 1:
            return h_BChw
        return F.interpolate(h_BChw, size=(H, H), mode="bicubic")

    def f_to_idx_Bl(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """Latent -> per-scale token indices, each (B, pn*pn)."""
        B, C, H, W = f_BChw.shape
        f_rest = f_BChw.detach().clone()
        idx_list = []
        for si, pn in enumerate(self.patch_nums):
            z = f_rest if si == self.SN - 1 else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx_N = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, C))
            h_BChw = self.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2)
            f_rest = f_rest - self.phi(si)(self._upsample(h_BChw, si))
            idx_list.append(idx_N.view(B, pn * pn))
        return idx_list

    def forward(self, f_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: straight-through f_hat, the VQ loss, and the codebook hits (V,)."""
        B, C, H, W = f_BChw.shape
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        loss = f_BChw.new_zeros(())
        hits_V = torch.zeros(self.vocab_size, device=f_BChw.device)
        for si, pn in enumerate(self.patch_nums):
            z = f_rest if si == self.SN - 1 else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx_N = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, C))
            hits_V += idx_N.bincount(minlength=self.vocab_size).float()
            h_BChw = self.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2)
            h_BChw = self.phi(si)(self._upsample(h_BChw, si))
            f_hat = f_hat + h_BChw
            f_rest = f_rest - h_BChw.detach()
            loss = (
                loss + F.mse_loss(f_hat.detach(), f_BChw) * self.beta + F.mse_loss(f_hat, f_no_grad)
            )
        f_hat_st = (f_hat.detach() - f_no_grad) + f_BChw
        return f_hat_st, loss / self.SN, hits_V

    def idx_to_fhat(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Per-scale indices -> f_hat (B, Cvae, H, W)."""
        f_hat = None
        for si, idx_Bl in enumerate(idx_list):
            f_hat = self.add_scale(si, f_hat, idx_Bl)
        return f_hat

    def add_scale(self, si: int, f_hat: torch.Tensor | None, idx_Bl: torch.Tensor) -> torch.Tensor:
        """f_hat + phi_si(upsample(embedding(idx_Bl))): one scale of the residual sum."""
        return self.add_embedding(si, f_hat, self.embedding(idx_Bl))

    def add_embedding(
        self, si: int, f_hat: torch.Tensor | None, h_BlCv: torch.Tensor
    ) -> torch.Tensor:
        """f_hat + phi_si(upsample(h)) for scale si's embeddings (B, pn*pn, Cvae): codebook
        rows, or with ``more_smooth`` a probability-weighted mix of them."""
        B, pn = h_BlCv.shape[0], self.patch_nums[si]
        h_BChw = h_BlCv.transpose(1, 2).reshape(B, self.Cvae, pn, pn)
        h = self.phi(si)(self._upsample(h_BChw, si))
        # The reshape above is channels-last in memory and the conv keeps that; the official
        # loop adds into a zero-initialised f_hat in place, which stays contiguous, so the
        # decoder takes the same convolution path as the official one.
        return (h if f_hat is None else f_hat + h).contiguous()

    def next_input(self, si: int, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat after scale si -> VAR input of scale si+1, (B, pn_{si+1}^2, Cvae)."""
        pn = self.patch_nums[si + 1]
        B = f_hat.shape[0]
        x = F.interpolate(f_hat, size=(pn, pn), mode="area") if pn != f_hat.shape[-1] else f_hat
        return x.reshape(B, self.Cvae, pn * pn).transpose(1, 2)

    def idx_to_var_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Teacher forcing: all scales' inputs but the first, concatenated, (B, L - 1, Cvae)."""
        f_hat, inputs = None, []
        for si in range(self.SN - 1):
            f_hat = self.add_scale(si, f_hat, idx_list[si])
            inputs.append(self.next_input(si, f_hat))
        return torch.cat(inputs, dim=1)
