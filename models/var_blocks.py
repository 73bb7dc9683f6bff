"""The three blocks of the VAR transformer: AdaLN self-attention block, FFN, AdaLN before head.

Attention is written as explicit MatMul -> Softmax -> MatMul with the scale on the query
side (never a fused SDPA kernel), so the exported graph exposes both batched matmuls for
Q/DQ. The KV cache is functional: a block takes the past K/V and returns the updated ones,
which is what the exported decode step needs (no hidden module state).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

KV = tuple[torch.Tensor, torch.Tensor]  # (k_BHLc, v_BHLc)
# Applied to a step's new keys and values before they join the cache and the attention:
# how a quantized KV cache stores them (``sasq.engines.torch_backend``). None: as computed.
StoreKV = Callable[[torch.Tensor, torch.Tensor], KV]


class FFN(nn.Module):
    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, attn_l2_norm: bool):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100.0)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)
        # Analysis only (``tools.attention_stats``): called with the softmax probabilities
        # (B, H, L, S) of every forward; None in every graph that is exported or timed.
        self.probs_observer: Callable[[torch.Tensor], None] | None = None

    def forward(
        self,
        x_BLC: torch.Tensor,
        attn_bias: torch.Tensor | None,
        past: KV | None,
        store: StoreKV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(
            B, L, 3, self.num_heads, self.head_dim
        )
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B H L c
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q, dim=-1) * scale_mul
            k = F.normalize(k, dim=-1)
        else:
            q = q * self.scale
        if store is not None:
            k, v = store(k, v)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        attn_BHLS = q @ k.transpose(-2, -1)
        if attn_bias is not None:
            attn_BHLS = attn_BHLS + attn_bias
        p_BHLS = torch.softmax(attn_BHLS, dim=-1)
        if self.probs_observer is not None:
            self.probs_observer(p_BHLS)
        out = p_BHLS @ v
        return self.proj(out.transpose(1, 2).reshape(B, L, C)), (k, v)


class SharedAdaLin(nn.Linear):
    """The one AdaLN linear of a shared-AdaLN VAR (official VAR-d36): every block adds its
    own ``ada_gss`` to this output. cond_BD (after SiLU) -> (B, 6, C)."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return super().forward(cond_BD).view(-1, 6, self.out_features // 6)


class AdaLNSelfAttn(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        cond_dim: int,
        num_heads: int,
        mlp_ratio: float,
        norm_eps: float,
        attn_l2_norm: bool,
        shared_aln: bool = False,
    ):
        super().__init__()
        self.C, self.shared_aln = embed_dim, shared_aln
        self.attn = SelfAttention(embed_dim, num_heads, attn_l2_norm)
        self.ffn = FFN(embed_dim, round(embed_dim * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        if shared_aln:  # official name and shape: (1, 1, 6, C)
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, embed_dim) / embed_dim**0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * embed_dim))

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2 of this block, from the
        condition cond_BD, or with shared AdaLN from the shared linear's output (B, 6, C)."""
        if self.shared_aln:
            return self.ada_gss[0] + cond
        return self.ada_lin(cond).view(-1, 6, self.C)

    def forward(
        self,
        x: torch.Tensor,
        ada_B6C: torch.Tensor,
        attn_bias: torch.Tensor | None,
        past: KV | None = None,
        store: StoreKV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """``ada_B6C`` = ``modulation(cond_BD)``, computed once per condition by the caller."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = ada_B6C.unsqueeze(1).unbind(2)
        h, kv = self.attn(self.ln_wo_grad(x) * (scale1 + 1) + shift1, attn_bias, past, store)
        x = x + h * gamma1
        x = x + self.ffn(self.ln_wo_grad(x) * (scale2 + 1) + shift2) * gamma2
        return x, kv


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, D: int, norm_eps: float):
        super().__init__()
        self.C = C
        self.ln_wo_grad = nn.LayerNorm(C, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * C))

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """(B, 2, C): scale, shift."""
        return self.ada_lin(cond_BD).view(-1, 2, self.C)

    def forward(self, x_BLC: torch.Tensor, ada_B2C: torch.Tensor) -> torch.Tensor:
        scale, shift = ada_B2C.unsqueeze(1).unbind(2)
        return self.ln_wo_grad(x_BLC) * (scale + 1) + shift
