"""Typed configuration of the VQVAE and the VAR transformer.

Sizes are configuration, so the same code serves the tiny embedded default and every
released VAR checkpoint. ``official(depth)`` is the preset of ``var_d{depth}.pth`` (16, 20, 24,
30: 256 px; 36: 512 px with shared AdaLN) with the official sampling recipe;
``official_vqvae()`` / ``official_var(depth)`` reproduce the shapes of FoundationVision's
``build_vae_var``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields

# The official scale lists by resolution (``--pn 256`` / ``512`` of the official training).
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
OFFICIAL_PATCH_NUMS = PATCH_NUMS_256
# Released depth -> resolution; d36 is the only 512 px model and the only shared-AdaLN one.
OFFICIAL_RESOLUTION = {16: 256, 20: 256, 24: 256, 30: 256, 36: 512}
OFFICIAL_SHARED_ALN = frozenset({36})


@dataclass(frozen=True)
class VQVAEConfig:
    vocab_size: int = 4096
    z_channels: int = 32  # Cvae: channels of the latent and of each codebook entry
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    in_channels: int = 3
    using_sa: bool = True
    using_mid_sa: bool = True
    quant_conv_ks: int = 3
    quant_resi: float = 0.5  # phi(h) = (1 - r) h + r conv(h)
    share_quant_resi: int = 4  # 4 phi convs shared over the scales (VAR's default)
    patch_nums: tuple[int, ...] = OFFICIAL_PATCH_NUMS
    beta: float = 0.25  # commitment weight, training only

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample


@dataclass(frozen=True)
class VARConfig:
    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    num_classes: int = 1000
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    attn_l2_norm: bool = True
    cond_drop_rate: float = 0.1  # class dropped to "unconditional" in training, for CFG
    patch_nums: tuple[int, ...] = OFFICIAL_PATCH_NUMS
    # One AdaLN linear for all blocks, each adding its own ``ada_gss`` (official VAR-d36).
    shared_aln: bool = False


@dataclass(frozen=True)
class SamplingConfig:
    """Host-side sampling: CFG ramps from 0 at the first scale to ``cfg`` at the last.

    ``more_smooth``: the official demo's smoothing: the next scale is built from a
    Gumbel-softmax mix of codebook entries instead of the sampled entry (visual quality; not
    what the official FID numbers use)."""

    cfg: float = 1.5
    top_k: int = 0
    top_p: float = 0.0
    more_smooth: bool = False


# What the official README samples its published FID / IS with.
OFFICIAL_SAMPLING = SamplingConfig(cfg=1.5, top_k=900, top_p=0.96)


@dataclass(frozen=True)
class ModelConfig:
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    var: VARConfig = field(default_factory=VARConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        def build(dc, values: dict):
            if not isinstance(values, dict):
                raise ValueError(f"{dc.__name__} must be a JSON object, got {values!r:.40}")
            known = {f.name: f for f in fields(dc)}
            unknown = set(values) - set(known)
            if unknown:
                raise ValueError(f"unknown {dc.__name__} fields: {sorted(unknown)}")
            kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            return dc(**kw)

        from sasq.models.validate import check_model_config

        if not isinstance(d, dict):
            raise ValueError(f"a model config must be a JSON object, got {type(d).__name__}")
        cfg = cls(
            vqvae=build(VQVAEConfig, d.get("vqvae", {})),
            var=build(VARConfig, d.get("var", {})),
            sampling=build(SamplingConfig, d.get("sampling", {})),
        )
        check_model_config(cfg)  # a config file is a stranger's: types and ranges
        return cfg


def official_vqvae(patch_nums: tuple[int, ...] = OFFICIAL_PATCH_NUMS) -> VQVAEConfig:
    """``vae_ch160v4096z32.pth`` (one file for 256 and 512 px: only the scales differ)."""
    return VQVAEConfig(patch_nums=patch_nums)


def official_var(
    depth: int, patch_nums: tuple[int, ...] = OFFICIAL_PATCH_NUMS, shared_aln: bool = False
) -> VARConfig:
    """``var_d{depth}.pth``: width 64 * depth, heads = depth, as in ``build_vae_var``."""
    return VARConfig(
        depth=depth,
        embed_dim=64 * depth,
        num_heads=depth,
        patch_nums=patch_nums,
        shared_aln=shared_aln,
    )


def official(depth: int = 16) -> ModelConfig:
    """The released ``var_d{depth}.pth`` + ``vae_ch160v4096z32.pth``: resolution, scales,
    shared AdaLN and the official sampling recipe (cfg 1.5, top-k 900, top-p 0.96)."""
    if depth not in OFFICIAL_RESOLUTION:
        known = ", ".join(map(str, OFFICIAL_RESOLUTION))
        raise ValueError(f"no released VAR of depth {depth}; choose from {known}")
    pns = PATCH_NUMS_512 if OFFICIAL_RESOLUTION[depth] == 512 else PATCH_NUMS_256
    return ModelConfig(
        vqvae=official_vqvae(pns),
        var=official_var(depth, pns, shared_aln=depth in OFFICIAL_SHARED_ALN),
        sampling=OFFICIAL_SAMPLING,
    )


def digits32() -> ModelConfig:
    """The second embedded model: 32x32 digits, 7 scales (1,2,3,4,5,6,8: 155 tokens), the
    default's VQVAE and VAR widths.

    A VAR-like sequence on a model that still trains on two CPU cores: attention over 155
    keys at the last scale, where a few key tokens can draw much of it (the condition
    shift-and-sum is made for), against the default's 30.
    """
    base = tiny_default()
    patch_nums = (1, 2, 3, 4, 5, 6, 8)
    return dataclasses.replace(
        base,
        vqvae=dataclasses.replace(base.vqvae, patch_nums=patch_nums),
        var=dataclasses.replace(base.var, patch_nums=patch_nums),
    )


def tiny_default() -> ModelConfig:
    """The embedded default: 16x16 grey digits, 4 scales (1,2,3,4), a 4-block VAR of width 128.

    Width is not 64 * depth here: the whole default must stay under 10 MB and train on two
    CPU cores in minutes, so the tiny model decouples the two.
    """
    patch_nums = (1, 2, 3, 4)
    vae = VQVAEConfig(
        vocab_size=512,
        z_channels=32,
        ch=24,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        in_channels=1,
        using_sa=False,
        using_mid_sa=True,
        patch_nums=patch_nums,
    )
    var = VARConfig(depth=4, embed_dim=128, num_heads=4, num_classes=10, patch_nums=patch_nums)
    return ModelConfig(vqvae=vae, var=var, sampling=SamplingConfig(cfg=2.0, top_k=0, top_p=0.0))


# The embedded models by name (``train-default --preset``, ``--model NAME``).
PRESETS = {"default": tiny_default, "digits32": digits32}
