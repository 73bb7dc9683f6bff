"""Memory a request will need, estimated from the model's sizes before anything is allocated.

A request that cannot fit is refused in one line with the estimate and what the machine
has, instead of being killed by the kernel minutes later (``bench --batch-sizes 100000``
took a 24 GB machine down) or failing inside torch with a traceback.

The estimates count the large buffers, in float32, and nothing small:

- building the model: its parameters (twice: torch initialises through temporaries) and
  the block-causal attention mask, L x L for the L tokens of all scales together;
- generating a batch of B images (2B rows with CFG): the KV cache, 2 x layers x 2B x L x
  width; at the last (largest) scale the attention scores and probabilities (2B x heads x
  l x L, twice), the MLP hidden activations, and the logits with the host's copies of them
  for CFG mixing and sampling (2B x l x vocab, four times); then the decoded images and the
  decoder's full-resolution activations (a few live tensors of its widest channel count);
- exporting: the parameters three times (torch.export, the ONNX IR, serialization) and the
  dense resampling matrices of the scale transitions, built in float64 from an identity.

"Available" is the kernel's MemAvailable (free plus reclaimable cache), capped by a
cgroup v2 limit when the process runs under one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sasq.errors import UserError
from sasq.models.config import ModelConfig

F32 = 4
GB = 1e9


@dataclass(frozen=True)
class Estimate:
    """Bytes by part, so a refusal can say what is large."""

    parts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(b for _, b in self.parts)

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.parts + other.parts)

    def describe(self) -> str:
        big = sorted(self.parts, key=lambda p: -p[1])[:3]
        return ", ".join(f"{name} {_gb(b)}" for name, b in big if b)


def _gb(n: float) -> str:
    if n >= 100 * GB:
        return f"{n / GB:,.0f} GB"
    return f"{n / GB:.3g} GB" if n >= 0.1 * GB else f"{n / 1e6:.3g} MB"


def _tokens(cfg: ModelConfig) -> int:
    return sum(pn * pn for pn in cfg.var.patch_nums)


def var_params(cfg: ModelConfig) -> int:
    v, C = cfg.var, cfg.var.embed_dim
    hidden = round(C * v.mlp_ratio)
    block = C * 6 * C + 4 * C * C + 2 * C * hidden + 12 * C + hidden
    vocab, L = cfg.vqvae.vocab_size, _tokens(cfg)
    rest = C * vocab + 2 * C * C + (L + v.num_classes + 1 + len(v.patch_nums) + 40) * C
    return v.depth * block + rest


def vqvae_params(cfg: ModelConfig) -> int:
    q = cfg.vqvae
    convs = sum((q.ch * m) ** 2 for m in q.ch_mult) * 9 * (2 * q.num_res_blocks + 4)
    quant = q.vocab_size * q.z_channels * (1 + len(q.patch_nums)) + 9 * q.z_channels**2 * 4
    return 2 * convs + quant


def build_estimate(cfg: ModelConfig) -> Estimate:
    """Building the PyTorch model of ``cfg`` (``sasq.models.build``)."""
    L = _tokens(cfg)
    params = (var_params(cfg) + vqvae_params(cfg)) * F32 * 2
    return Estimate((("parameters", params), ("attention mask", 9 * L * L)))


def generation_estimate(cfg: ModelConfig, batch: int, images: int = 0) -> Estimate:
    """One generation of ``batch`` images; ``images`` more decoded images kept (a grid)."""
    v, q = cfg.var, cfg.vqvae
    rows, L, l_last = 2 * batch, _tokens(cfg), v.patch_nums[-1] ** 2
    C, S = v.embed_dim, q.image_size
    kv = 2 * v.depth * rows * L * C * F32
    step = rows * l_last * (2 * v.num_heads * L + 2 * round(C * v.mlp_ratio) + 4 * C) * F32
    logits = 4 * rows * l_last * q.vocab_size * F32
    pixels = batch * S * S
    decoder = 4 * pixels * q.ch * q.ch_mult[0] * F32  # its widest full-resolution tensors
    kept = (batch + images) * q.in_channels * S * S * F32
    return Estimate(
        (
            ("KV cache", kv),
            ("attention and MLP", step),
            ("logits", logits),
            ("decoder", decoder),
            ("images", kept),
        )
    )


def calibration_estimate(cfg: ModelConfig, batch: int) -> Estimate:
    """A calibration rollout of ``batch`` images: a generation plus, at the last scale, the
    inputs of every quantized op of every layer handed back to the host (twice: ONNX
    Runtime's output and the observers' float64 copies)."""
    v = cfg.var
    rows, l_last, C = 2 * batch, v.patch_nums[-1] ** 2, v.embed_dim
    per_layer = rows * l_last * (8 * C + round(C * v.mlp_ratio)) * F32
    recorded = Estimate((("recorded activations", 2 * v.depth * per_layer),))
    return generation_estimate(cfg, batch) + recorded


def export_estimate(cfg: ModelConfig) -> Estimate:
    """``sasq export`` of ``cfg``: weights in three forms plus the resampling matrices."""
    H2 = cfg.var.patch_nums[-1] ** 2
    mats = 0
    for pn in cfg.var.patch_nums[:-1]:
        l = pn * pn
        mats += 8 * l * l + 12 * l * H2  # bicubic: identity in float64, the map in both
        mats += 8 * H2 * H2 + 12 * H2 * l  # area: the H^2 x H^2 identity dominates
    params = 3 * (var_params(cfg) + vqvae_params(cfg)) * F32
    return Estimate((("weights", params), ("resampling matrices", mats)))


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes() -> int:
    """Memory this process can still take: MemAvailable, capped by a cgroup limit."""
    found = [b for b in (_meminfo_available(), _cgroup_available()) if b is not None]
    if not found:
        try:
            found = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # unknown: do not refuse on a guess
    return max(0, min(found))


def require_fits(est: Estimate, what: str, hint: str) -> None:
    """``UserError`` when ``est`` exceeds the available memory: the estimate, its largest
    parts, what the machine has, and ``hint`` (what to lower)."""
    need, have = est.total, available_bytes()
    if need > have:
        raise UserError(
            f"{what} needs about {_gb(need)} of memory ({est.describe()}), more than the "
            f"{_gb(have)} available on this machine; {hint}"
        )
