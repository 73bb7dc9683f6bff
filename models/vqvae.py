"""VQVAE: encoder -> quant_conv -> multi-scale residual VQ -> post_quant_conv -> decoder."""

from __future__ import annotations

import torch
from torch import nn

from sasq.models.config import VQVAEConfig
from sasq.models.quantizer import VectorQuantizer2
from sasq.models.vae_blocks import Decoder, Encoder


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.V, self.Cvae = cfg.vocab_size, cfg.z_channels
        dd = dict(
            ch=cfg.ch,
            ch_mult=cfg.ch_mult,
            num_res_blocks=cfg.num_res_blocks,
            in_channels=cfg.in_channels,
            z_channels=cfg.z_channels,
            using_sa=cfg.using_sa,
            using_mid_sa=cfg.using_mid_sa,
        )
        self.encoder = Encoder(**dd)
        self.decoder = Decoder(**dd)
        self.quantize = VectorQuantizer2(
            vocab_size=cfg.vocab_size,
            Cvae=cfg.z_channels,
            patch_nums=cfg.patch_nums,
            quant_resi=cfg.quant_resi,
            share_quant_resi=cfg.share_quant_resi,
            beta=cfg.beta,
        )
        ks = cfg.quant_conv_ks
        self.quant_conv = nn.Conv2d(self.Cvae, self.Cvae, ks, stride=1, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(self.Cvae, self.Cvae, ks, stride=1, padding=ks // 2)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: reconstruction in [-1, 1] (unclamped), VQ loss, codebook hits."""
        f_hat, vq_loss, hits_V = self.quantize(self.quant_conv(self.encoder(img)))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, hits_V

    @torch.no_grad()
    def img_to_idx(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Image in [-1, 1] -> per-scale token indices [(B, pn*pn) for pn in patch_nums]."""
        return self.quantize.f_to_idx_Bl(self.quant_conv(self.encoder(img)))

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Summed multi-scale latent -> image in [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    @torch.no_grad()
    def idx_to_img(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.fhat_to_img(self.quantize.idx_to_fhat(idx_list))
