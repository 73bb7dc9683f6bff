"""The VAR transformer: next-scale prediction over a multi-scale token pyramid.

Parameter names and shapes follow the official ``var_d{16..36}.pth`` checkpoints (d36 with
shared AdaLN: one ``shared_ada_lin`` plus a per-block ``ada_gss``). Training
(``forward``) runs all scales at once under the block-causal mask; inference runs one scale
at a time through ``decode_step`` with an explicit KV cache, driven by the host loop in
``sasq.engines.decode`` (sampling and CFG stay on the host, as for every backend).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from sasq.models.config import VARConfig, VQVAEConfig
from sasq.models.var_blocks import KV, AdaLNBeforeHead, AdaLNSelfAttn, SharedAdaLin, StoreKV


class VAR(nn.Module):
    def __init__(self, cfg: VARConfig, vae_cfg: VQVAEConfig):
        super().__init__()
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        if tuple(cfg.patch_nums) != tuple(vae_cfg.patch_nums):
            raise ValueError("VAR and VQVAE must share patch_nums")
        self.cfg = cfg
        self.Cvae, self.V = vae_cfg.z_channels, vae_cfg.vocab_size
        self.depth, self.C, self.D = cfg.depth, cfg.embed_dim, cfg.embed_dim
        self.num_classes = cfg.num_classes
        self.patch_nums = tuple(cfg.patch_nums)
        self.L = sum(pn * pn for pn in self.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        ends = list(itertools.accumulate(pn * pn for pn in self.patch_nums))
        self.begin_ends = list(zip([0, *ends[:-1]], ends, strict=True))

        C = self.C
        init_std = math.sqrt(1 / C / 3)
        self.word_embed = nn.Linear(self.Cvae, C)
        self.class_emb = nn.Embedding(self.num_classes + 1, C)  # last id = unconditional
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        for t in (self.class_emb.weight, self.pos_start, self.pos_1LC, self.lvl_embed.weight):
            nn.init.trunc_normal_(t.data, mean=0, std=init_std)
        self.shared_aln = cfg.shared_aln
        if cfg.shared_aln:  # one AdaLN linear for every block, as the official VAR-d36
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), SharedAdaLin(self.D, 6 * C))
        else:
            self.shared_ada_lin = nn.Identity()

        self.blocks = nn.ModuleList(
            AdaLNSelfAttn(
                C,
                self.D,
                cfg.num_heads,
                cfg.mlp_ratio,
                cfg.norm_eps,
                cfg.attn_l2_norm,
                cfg.shared_aln,
            )
            for _ in range(cfg.depth)
        )

        lvl_L = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(self.patch_nums)])
        d_1L1 = lvl_L.view(1, self.L, 1)
        self.register_buffer("lvl_1L", lvl_L.view(1, self.L).contiguous())
        mask = torch.where(d_1L1 >= d_1L1.transpose(1, 2), 0.0, -torch.inf)
        self.register_buffer("attn_bias_for_masking", mask.reshape(1, 1, self.L, self.L))

        self.head_nm = AdaLNBeforeHead(C, self.D, cfg.norm_eps)
        self.head = nn.Linear(C, self.V)
        self.init_weights(init_std)

    @torch.no_grad()
    def init_weights(self, init_std: float, init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02):
        """The official init: small head, near-identity residual branches (gamma ~ 0)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                if m.bias is not None:
                    m.bias.zero_()
        self.head.weight.mul_(init_head)
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        for b in self.blocks:
            b.attn.proj.weight.div_(math.sqrt(2 * self.depth))
            b.ffn.fc2.weight.div_(math.sqrt(2 * self.depth))
            if b.shared_aln:  # rows: gamma1, gamma2, then scales and shifts
                b.ada_gss[:, :, 2:].mul_(init_adaln)
                b.ada_gss[:, :, :2].mul_(init_adaln_gamma)
            else:
                b.ada_lin[-1].weight[2 * self.C :].mul_(init_adaln)
                b.ada_lin[-1].weight[: 2 * self.C].mul_(init_adaln_gamma)

    # ----- pieces shared by training and the per-scale decode step -----

    def lvl_pos(self, si: int) -> torch.Tensor:
        """Level + position embedding of scale si, (1, pn*pn, C)."""
        bg, ed = self.begin_ends[si]
        return self.lvl_embed(self.lvl_1L[:, bg:ed]) + self.pos_1LC[:, bg:ed]

    def class_cond(self, label_B: torch.Tensor) -> torch.Tensor:
        """Class ids (num_classes = unconditional) -> condition cond_BD."""
        return self.class_emb(label_B)

    def first_input(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """Start tokens of scale 0 from the condition, (B, first_l, C)."""
        B = cond_BD.shape[0]
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1)
        return sos + self.pos_start.expand(B, -1, -1) + self.lvl_pos(0)

    def embed_input(self, si: int, x_BlCv: torch.Tensor) -> torch.Tensor:
        """Scale si's VQ input (area-downsampled f_hat, Cvae channels) -> tokens (B, l, C)."""
        return self.word_embed(x_BlCv) + self.lvl_pos(si)

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """Every AdaLN modulation of the condition, (B, 6 * depth + 2, C): each block's six
        rows, then the head's two. It depends on the class only, so decoding computes it once
        per image instead of once per scale (on VAR-d16 the AdaLN linears are a third of the
        weights). With shared AdaLN the shared linear runs once and each block adds its
        ``ada_gss``."""
        cond = self.shared_ada_lin(cond_BD)  # Identity unless shared AdaLN
        mods = [b.modulation(cond) for b in self.blocks]
        return torch.cat([*mods, self.head_nm.modulation(cond_BD)], dim=1)

    @staticmethod
    def block_modulation(mod_BMC: torch.Tensor, i: int) -> torch.Tensor:
        return mod_BMC[:, 6 * i : 6 * i + 6]

    def logits(self, h_BLC: torch.Tensor, mod_BMC: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(h_BLC, mod_BMC[:, -2:]))

    # ----- inference: one scale with an explicit KV cache -----

    def decode_step(
        self,
        x_BlC: torch.Tensor,
        mod_BMC: torch.Tensor,
        past: list[KV] | None,
        store: list[StoreKV] | None = None,
    ) -> tuple[torch.Tensor, list[KV]]:
        """Tokens of one scale attend to themselves and every earlier scale (in ``past``);
        ``mod_BMC`` = ``modulation(cond_BD)``; ``store[i]``: how block i's cache stores new
        keys and values (e.g. quantized), applied before they are attended to."""
        new_kv = []
        h = x_BlC
        for i, b in enumerate(self.blocks):
            p_i = None if past is None else past[i]
            h, kv = b(h, self.block_modulation(mod_BMC, i), None, p_i, store and store[i])
            new_kv.append(kv)
        return self.logits(h, mod_BMC), new_kv

    # ----- training: every scale at once, teacher-forced -----

    def forward(
        self,
        label_B: torch.Tensor,
        x_BLCv_wo_first_l: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits (B, L, V) of every scale under the block-causal mask."""
        B = label_B.shape[0]
        if self.training and self.cfg.cond_drop_rate > 0:
            drop = torch.rand(B, generator=generator) < self.cfg.cond_drop_rate
            label_B = torch.where(drop.to(label_B.device), self.num_classes, label_B)
        cond_BD = self.class_cond(label_B)
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, -1, -1)
        x = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l)), dim=1)
        x = x + self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC
        mod_BMC = self.modulation(cond_BD)
        for i, b in enumerate(self.blocks):
            x, _ = b(x, self.block_modulation(mod_BMC, i), self.attn_bias_for_masking)
        return self.logits(x, mod_BMC)
