"""The released FoundationVision checkpoints: their file names, and a model config read off
their weights, so a folder holding ``vae_ch160v4096z32.pth`` and ``var_d16.pth`` (or
``var_d36.pth``) loads without a hand-written ``config.json``.

Every size is a tensor shape (depth = number of blocks, width = ``word_embed`` rows, ...);
the scales come from the ``lvl_1L`` buffer the official VAR saves (scale i owns pn_i^2
tokens), else from the length of ``pos_1LC`` among the official lists. What no shape
records (the phi residual ratio 0.5, LayerNorm eps 1e-6) is the official code's constant.
A strict load then checks every name and shape against the inferred model anyway.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import torch

from sasq.models.checkpoint import CheckpointError
from sasq.models.config import (
    OFFICIAL_SAMPLING,
    PATCH_NUMS_256,
    PATCH_NUMS_512,
    ModelConfig,
    VARConfig,
    VQVAEConfig,
)

RELEASED_VAE = "vae_ch160v4096z32.pth"
RELEASED_VAR = re.compile(r"var_d(\d+)\.pth")
_KNOWN_PATCH_NUMS = (PATCH_NUMS_256, PATCH_NUMS_512)

StateDict = dict[str, torch.Tensor]


def released_vae(folder: Path) -> Path | None:
    """``vae_ch160v4096z32.pth`` in ``folder``, or None."""
    vae = folder / RELEASED_VAE
    return vae if vae.is_file() else None


def released_var(folder: Path) -> Path | None:
    """The one ``var_d{depth}.pth`` in ``folder``, or None. Several are ambiguous: the user
    names one with ``load_model(var=...)``."""
    found = sorted(p for p in folder.glob("var_d*.pth") if RELEASED_VAR.fullmatch(p.name))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise CheckpointError(f"{folder}: several VAR checkpoints ({names}); pick one with `var`")
    return found[0] if found else None


def infer_config(vae_sd: StateDict, var_sd: StateDict, source: str) -> ModelConfig:
    """The model config of two official-format state dicts, with the official sampling."""
    try:
        pns = _patch_nums(var_sd)
        vae, var = _vqvae_config(vae_sd, pns), _var_config(var_sd, pns)
    except (KeyError, IndexError, ValueError) as e:
        raise CheckpointError(f"{source}: not an official VAR / VQVAE checkpoint ({e})") from None
    # top-k over the whole vocabulary filters nothing: a smaller test vocabulary keeps it valid
    top_k = min(OFFICIAL_SAMPLING.top_k, vae.vocab_size)
    return ModelConfig(vqvae=vae, var=var, sampling=replace(OFFICIAL_SAMPLING, top_k=top_k))


def _patch_nums(sd: StateDict) -> tuple[int, ...]:
    lvl = sd.get("lvl_1L")
    if lvl is not None:
        counts = torch.bincount(lvl.reshape(-1).long()).tolist()
        pns = tuple(math.isqrt(n) for n in counts)
        if all(p * p == n for p, n in zip(pns, counts, strict=True)):
            return pns
        raise ValueError("lvl_1L does not count square token maps")
    L, SN = sd["pos_1LC"].shape[1], sd["lvl_embed.weight"].shape[0]
    for pns in _KNOWN_PATCH_NUMS:
        if (sum(p * p for p in pns), len(pns)) == (L, SN):
            return pns
    raise ValueError(f"{L} tokens over {SN} scales is no official scale list and no lvl_1L")


def _blocks(sd: StateDict, prefix: str) -> int:
    """Number of ``prefix{i}.`` sub-modules."""
    found = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if found != set(range(len(found))):
        raise ValueError(f"{prefix}* are not numbered 0..n-1")
    return len(found)


def _var_config(sd: StateDict, pns: tuple[int, ...]) -> VARConfig:
    depth = _blocks(sd, "blocks.")
    C, Cvae = sd["word_embed.weight"].shape
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1] if l2 else depth  # official: heads = depth
    return VARConfig(
        depth=depth,
        embed_dim=C,
        num_heads=heads,
        num_classes=sd["class_emb.weight"].shape[0] - 1,
        mlp_ratio=sd["blocks.0.ffn.fc1.weight"].shape[0] / C,
        attn_l2_norm=l2,
        patch_nums=pns,
        shared_aln="shared_ada_lin.1.weight" in sd,
    )


def _vqvae_config(sd: StateDict, pns: tuple[int, ...]) -> VQVAEConfig:
    V, z = sd["quantize.embedding.weight"].shape
    ch, in_ch = sd["encoder.conv_in.weight"].shape[:2]
    levels = _blocks(sd, "encoder.down.")
    ch_mult = tuple(
        sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)
    )
    return VQVAEConfig(
        vocab_size=V,
        z_channels=z,
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=_blocks(sd, "encoder.down.0.block."),
        in_channels=in_ch,
        using_sa=f"encoder.down.{levels - 1}.attn.0.qkv.weight" in sd,
        using_mid_sa="encoder.mid.attn_1.qkv.weight" in sd,
        quant_conv_ks=sd["quant_conv.weight"].shape[-1],
        share_quant_resi=_blocks(sd, "quantize.quant_resi.qresi_ls."),
        patch_nums=pns,
    )
