"""The PyTorch reference backend of the decoding loop (eager, fp32), optionally with an int8
KV cache.

With ``CacheQuant`` (the static scales of a quantized export's int8 cache), each block's
new keys and values are quantized once, when they join the cache, exactly as the exported
graph does (round half to even, saturated, ``bits`` < 8 clipped to the narrower grid), kept
as int8 tensors between steps and dequantized to be attended to. Everything else stays
FP32, so this is the reference of what the cache alone costs; a graph written with
``QuantConfig(attention_qdq=False)`` and float linears computes the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sasq.errors import UserError
from sasq.models import LoadedModel
from sasq.models.var_blocks import KV


@dataclass(frozen=True)
class CacheQuant:
    """Per block, the dequantization scales of the K and V caches; their bits."""

    k_scales: tuple[float, ...]
    v_scales: tuple[float, ...]
    bits: int = 8

    @classmethod
    def from_export(cls, onnx_dir) -> CacheQuant:
        """The int8 cache of a quantized export (``sasq quantize``), from its manifest."""
        from sasq.exporter.manifest import verify

        m = verify(onnx_dir)
        quant = m.extra.get("quant", {})
        if quant.get("kv_cache") != "int8":
            raise UserError(f"{onnx_dir}: not an export with an int8 KV cache (sasq quantize)")
        if other := sorted({c.dtype for c in m.cache} - {"INT8"}):  # e.g. --precision fp8
            raise UserError(
                f"{onnx_dir}: its KV cache is {other[0]}, not int8 (no PyTorch reference)"
            )
        if any(c.input.startswith("past_vcopy_") for c in m.cache):
            raise UserError(f"{onnx_dir}: shift-and-sum copies have no PyTorch reference")
        bits = quant.get("kv_bits")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
            raise UserError(f"{onnx_dir}: extra.quant.kv_bits {bits!r:.20} is not in 2..8")
        scales = {c.input: c.scale for c in m.cache}
        depth = m.dims["depth"]
        if any(f"past_{kv}_{i}" not in scales for kv in ("key", "value") for i in range(depth)):
            raise UserError(f"{onnx_dir}: the manifest's cache lacks a layer's key or value")
        return cls(
            tuple(scales[f"past_key_{i}"] for i in range(depth)),
            tuple(scales[f"past_value_{i}"] for i in range(depth)),
            bits,
        )

    def quantize(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        lo, hi = (
            (-128, 127)
            if self.bits == 8
            else (-(2 ** (self.bits - 1) - 1), 2 ** (self.bits - 1) - 1)
        )
        return torch.round(x / torch.tensor(scale, dtype=x.dtype)).clamp_(lo, hi).to(torch.int8)


class TorchBackend:
    name = "torch"

    def __init__(self, model: LoadedModel, cache: CacheQuant | None = None):
        self.m = model
        self.cache = cache
        if cache is not None and len(cache.k_scales) != model.var.depth:
            raise UserError(f"int8 cache of {len(cache.k_scales)} blocks for a model of "
                            f"depth {model.var.depth}")  # fmt: skip
        self._mod: torch.Tensor | None = None  # every AdaLN modulation, (2B, 6 depth + 2, C)
        self._x: torch.Tensor | None = None  # this scale's input tokens (2B, l, C)
        self._past: list[KV] | None = None  # float cache, or the int8 cache's tensors
        self._f_hat: torch.Tensor | None = None

    @torch.no_grad()
    def reset(self, label_2B: torch.Tensor) -> None:
        cond = self.m.var.class_cond(label_2B)
        self._mod = self.m.var.modulation(cond)
        self._x = self.m.var.first_input(cond)
        self._past, self._f_hat = None, None

    @torch.no_grad()
    def step(self, si: int) -> torch.Tensor:
        if self.cache is None:
            logits, self._past = self.m.var.decode_step(self._x, self._mod, self._past)
            return logits
        c = self.cache
        stored: list[KV] = []

        def store_for(i: int):
            def store(k: torch.Tensor, v: torch.Tensor) -> KV:
                kq, vq = c.quantize(k, c.k_scales[i]), c.quantize(v, c.v_scales[i])
                stored.append((kq, vq))
                return kq.float() * c.k_scales[i], vq.float() * c.v_scales[i]

            return store

        past = None
        if self._past is not None:
            past = [(k.float() * c.k_scales[i], v.float() * c.v_scales[i])
                    for i, (k, v) in enumerate(self._past)]  # fmt: skip
        stores = [store_for(i) for i in range(self.m.var.depth)]
        logits, _ = self.m.var.decode_step(self._x, self._mod, past, stores)
        if self._past is None:
            self._past = stored
        else:
            self._past = [(torch.cat((k, kn), 2), torch.cat((v, vn), 2))
                          for (k, v), (kn, vn) in zip(self._past, stored, strict=True)]  # fmt: skip
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
