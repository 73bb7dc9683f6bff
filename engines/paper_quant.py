"""A PyTorch fake-quant reference with the shift-and-sum paper's own quantizers.

Not deployable as static TensorRT Q/DQ, on purpose: it measures what static deployment
costs. Differences from the static graph (``sasq quantize``):

- linear inputs: dynamic per-token scales (amax of each token's row at run time);
- weights: per output channel, as the static path;
- QK^T: q and k with dynamic per-token scales;
- softmax probabilities: log2 quantization, p -> 2^-round(-log2 p) over 2^b - 1 levels
  (smaller values flush to 0);
- V: per-head dynamic scales; shift-and-sum per key token, chosen at run time from the
  attention each key receives (mean over queries, per row and head) under the same
  extra-key cap as the static writer (``sasq.exporter.shift_sum``).

The AdaLN linears run on the condition only (GEMV) and stay FP, as in the static path.

``v_only`` is the ablation that shows shift-and-sum's mechanism in isolation: only the AV
product's V is quantized (per head, as above, with or without shift-and-sum), everything
else stays FP, and every block records the error of its AV output against the same
probabilities times the FP V (``av_error``: signal and noise energy per image and layer).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sasq.engines.torch_backend import TorchBackend
from sasq.models import LoadedModel
from sasq.models.var_blocks import AdaLNSelfAttn


@dataclass(frozen=True)
class PaperQuantConfig:
    w_bits: int = 8
    a_bits: int = 8
    log2_softmax: bool = True
    shift_sum: bool = True
    budget: float = 0.01  # extra AV work as a fraction of the step's MatMul work
    max_n: int = 8
    v_only: bool = False  # quantize only V (the AV product's error in isolation)


def fake_quant(x: torch.Tensor, amax: torch.Tensor, bits: int) -> torch.Tensor:
    """DQ(Q(x)) on the symmetric ``bits`` grid whose largest level is ``amax``."""
    qmax = 2 ** (bits - 1) - 1
    s = (amax / qmax).clamp_min(1e-12)
    return (x / s).round().clamp(-qmax, qmax) * s


def per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    return fake_quant(x, x.abs().amax(dim=-1, keepdim=True), bits)


def per_channel_weight(w_NK: torch.Tensor, bits: int) -> torch.Tensor:
    return fake_quant(w_NK, w_NK.abs().amax(dim=1, keepdim=True), bits)


def log2_quant(p: torch.Tensor, bits: int) -> torch.Tensor:
    """p in [0, 1] -> 2^-k with k = round(-log2 p) in [0, 2^bits - 2]; below that -> 0."""
    kmax = 2**bits - 2
    k = (-torch.log2(p.clamp_min(1e-30))).round()
    return torch.where(k > kmax, torch.zeros_like(p), torch.exp2(-k))


def shift_sum_v(v_BHSc: torch.Tensor, n_BHS: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-head scales; a key with n copies becomes (1/n) sum_c Q(v + d_c),
    d_c = (2c+1-n) s/(2n). The probability split 1/n per copy is folded in here."""
    qmax = 2 ** (bits - 1) - 1
    s = (v_BHSc.abs().amax(dim=(2, 3), keepdim=True) / qmax).clamp_min(1e-12)
    out = torch.zeros_like(v_BHSc)
    n = n_BHS.unsqueeze(-1).to(v_BHSc.dtype)
    for c in range(int(n_BHS.max().item())):
        d = (2 * c + 1 - n) * s / (2 * n)
        q = ((v_BHSc + d) / s).round().clamp(-qmax, qmax) * s
        out = out + torch.where(c < n, q, torch.zeros_like(q))
    return out / n


class PaperQuantBackend(TorchBackend):
    """The torch backend with the paper's quantizers in every block's step."""

    name = "torch-paper-fq"

    def __init__(self, model: LoadedModel, qc: PaperQuantConfig):
        m = model
        if not qc.v_only:
            m = copy.copy(model)
            m.var = copy.deepcopy(model.var)
            with torch.no_grad():
                for b in m.var.blocks:
                    for lin in (b.attn.mat_qkv, b.attn.proj, b.ffn.fc1, b.ffn.fc2):
                        lin.weight.copy_(per_channel_weight(lin.weight, qc.w_bits))
                m.var.head.weight.copy_(per_channel_weight(m.var.head.weight, qc.w_bits))
        super().__init__(m)
        self.qc = qc
        self.extra_copies: list[float] = []  # per block call: mean extra keys per row and head
        self.av_error = AvError(m.var.depth)

    def reset(self, label_2B: torch.Tensor) -> None:
        super().reset(label_2B)
        self.av_error.new_batch(label_2B.shape[0] // 2)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.qc.v_only else per_token(x, self.qc.a_bits)

    @torch.no_grad()
    def step(self, si: int) -> torch.Tensor:
        var = self.m.var
        h, new_kv = self._x, []
        for i, b in enumerate(var.blocks):
            ada = var.block_modulation(self._mod, i)
            h, kv = self._block(i, b, h, ada, None if self._past is None else self._past[i])
            new_kv.append(kv)
        self._past = new_kv
        normed = var.head_nm(h, self._mod[:, -2:])
        return F.linear(self._act(normed), var.head.weight, var.head.bias)

    def _block(self, i: int, b: AdaLNSelfAttn, x: torch.Tensor, ada_B6C: torch.Tensor, past):
        qc, a, q_ = self.qc, b.attn, self._act
        gamma1, gamma2, scale1, scale2, shift1, shift2 = ada_B6C.unsqueeze(1).unbind(2)
        B, L, C = x.shape
        hin = q_(b.ln_wo_grad(x) * (scale1 + 1) + shift1)
        bias = torch.cat((a.q_bias, a.zero_k_bias, a.v_bias))
        qkv = F.linear(hin, a.mat_qkv.weight, bias).view(B, L, 3, a.num_heads, a.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if a.attn_l2_norm:
            q = F.normalize(q, dim=-1) * a.scale_mul_1H11.clamp_max(a.max_scale_mul).exp()
            k = F.normalize(k, dim=-1)
        else:
            q = q * a.scale
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        p = torch.softmax(q_(q) @ q_(k).transpose(-2, -1), -1)
        if qc.v_only:
            pq = p
        elif qc.log2_softmax:
            pq = log2_quant(p, qc.a_bits)
        else:
            pq = fake_quant(p, torch.ones(()), qc.a_bits)
        n = self._copies(p, C) if qc.shift_sum else torch.ones(p.shape[:2] + p.shape[-1:])
        out = pq @ shift_sum_v(v, n, qc.a_bits)
        if qc.v_only:
            self.av_error.add(i, p @ v, out)
        attn = a.proj(q_(out.transpose(1, 2).reshape(B, L, C)))
        x = x + attn * gamma1
        f = b.ffn
        h1 = f.act(f.fc1(q_(b.ln_wo_grad(x) * (scale2 + 1) + shift2)))
        x = x + f.fc2(q_(h1)) * gamma2
        return x, (k, v)

    def _copies(self, p_BHlS: torch.Tensor, C: int) -> torch.Tensor:
        """n per (row, head, key) from the attention each key receives, under the cap."""
        from sasq.exporter.shift_sum import choose_copies, extra_keys_per_layer

        S = p_BHlS.shape[-1]
        linear_kn = 12 * C * C  # qkv 3C^2 + proj C^2 + fc1/fc2 8C^2 per block
        cap = extra_keys_per_layer(self.qc.budget, linear_kn, S, C, 1)
        recv = p_BHlS.mean(dim=2).numpy()  # (rows, H, S)
        n = np.ones(recv.shape, np.int64)
        for r in range(recv.shape[0]):
            for h in range(recv.shape[1]):
                n[r, h] = choose_copies(recv[r, h], cap, self.qc.max_n)
        self.extra_copies.append(float((n - 1).sum(-1).mean()))
        return torch.from_numpy(n)


class AvError:
    """Signal and noise energy of each block's AV output, per image, over every step.

    Rows b and b + B of a batch are one image's conditional and unconditional passes
    (``decode``'s CFG layout); both count towards that image."""

    def __init__(self, depth: int):
        self.depth = depth
        self._signal: list[np.ndarray] = []  # per batch: (B, depth)
        self._noise: list[np.ndarray] = []

    def new_batch(self, images: int) -> None:
        self._signal.append(np.zeros((images, self.depth)))
        self._noise.append(np.zeros((images, self.depth)))

    def add(self, layer: int, exact: torch.Tensor, test: torch.Tensor) -> None:
        B = self._signal[-1].shape[0]
        sig = exact.double().pow(2).flatten(1).sum(1).view(2, B).sum(0)
        noise = (exact - test).double().pow(2).flatten(1).sum(1).view(2, B).sum(0)
        self._signal[-1][:, layer] += sig.numpy()
        self._noise[-1][:, layer] += noise.numpy()

    def per_image(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, depth) signal and noise energies, in generation order."""
        return np.concatenate(self._signal), np.concatenate(self._noise)
