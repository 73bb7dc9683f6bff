"""Checks of what a model folder or a manifest hands us: config values and weights.

A ``config.json`` (or a manifest's ``model_config``) is a stranger's file: every field must
have its declared type (no string ``"4"``, no ``true`` for a count, no float depth) and a
sane sign and range, or torch fails later with a traceback or silently builds nonsense.
Fields without a rule of their own (a field added later) still get the type check, from
their default's type. Weights must be finite: one NaN in the VQVAE gives black images, one
in the transformer crashes sampling three steps later; the error names the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields

import torch

MAX_PATCH = 1024  # the official 512 px model has 32; see exporter.manifest_schema
MAX_DIM = 1 << 20

# field -> (low, high), inclusive; per dataclass name
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "VQVAEConfig": {
        "vocab_size": (2, MAX_DIM),
        "z_channels": (1, 1 << 14),
        "ch": (1, 1 << 14),
        "num_res_blocks": (0, 64),
        "in_channels": (1, 4),
        "quant_conv_ks": (1, 15),
        "quant_resi": (-1.0, 1.0),
        "share_quant_resi": (1, 64),
        "beta": (0.0, 100.0),
    },
    "VARConfig": {
        "depth": (1, 512),
        "embed_dim": (1, 1 << 16),
        "num_heads": (1, 1 << 12),
        "num_classes": (1, MAX_DIM),
        "mlp_ratio": (1e-3, 64.0),
        "norm_eps": (1e-12, 1.0),
        "cond_drop_rate": (0.0, 1.0),
    },
    "SamplingConfig": {"cfg": (0.0, 100.0), "top_k": (0, MAX_DIM), "top_p": (0.0, 1.0)},
}


def _check_value(section: str, name: str, value: object, default: object) -> None:
    where = f"{section}.{name}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r:.40}")
        return
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r:.40}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where} must be a number, got {value!r:.40}")
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r:.40}")
    elif isinstance(default, tuple):
        if not isinstance(value, tuple) or not value:
            raise ValueError(f"{where} must be a non-empty list, got {value!r:.40}")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_PATCH:
                raise ValueError(f"{where} must hold integers in 1..{MAX_PATCH}, got {v!r:.40}")
    lo_hi = _RANGES.get(section, {}).get(name)
    if lo_hi is not None and not lo_hi[0] <= value <= lo_hi[1]:  # type: ignore[operator]
        raise ValueError(f"{where} is {value}, outside {lo_hi[0]}..{lo_hi[1]}")


def check_config_section(section: object) -> None:
    """Every field of one config dataclass instance (types, then ranges)."""
    name = type(section).__name__
    for f in fields(section):  # type: ignore[arg-type]
        default = f.default_factory() if callable(f.default_factory) else f.default
        _check_value(name, f.name, getattr(section, f.name), default)


def check_model_config(cfg) -> None:
    """``ValueError`` (one line) naming the first field of a ``ModelConfig`` that is wrong."""
    for section in (cfg.vqvae, cfg.var, cfg.sampling):
        check_config_section(section)
    v, q = cfg.var, cfg.vqvae
    for where, pns in (("var.patch_nums", v.patch_nums), ("vqvae.patch_nums", q.patch_nums)):
        if any(b <= a for a, b in zip(pns, pns[1:], strict=False)):
            raise ValueError(f"{where} must be strictly increasing, got {list(pns)}")
    if tuple(v.patch_nums) != tuple(q.patch_nums):
        raise ValueError("var.patch_nums and vqvae.patch_nums differ")
    if v.embed_dim % v.num_heads:
        raise ValueError(f"var.embed_dim {v.embed_dim} is not divisible by num_heads {v.num_heads}")
    if any(not 1 <= m <= 64 for m in q.ch_mult):
        raise ValueError(f"vqvae.ch_mult must hold integers in 1..64, got {list(q.ch_mult)}")
    if cfg.sampling.top_k > q.vocab_size:
        raise ValueError(f"sampling.top_k {cfg.sampling.top_k} exceeds vocab_size {q.vocab_size}")


def first_non_finite(
    state: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor] | None = None,
    masks: frozenset[str] = frozenset(),
) -> tuple[str, int] | None:
    """(name, count) of the first floating-point tensor holding NaN or Inf, else None.

    Where the freshly built module has non-finite values of its own (the block-causal mask
    is -inf above the diagonal), the checkpoint must have them at the same places only. A
    module built on the meta device has no values to compare: its buffers named in
    ``masks`` may then hold -inf (a mask), never NaN or +inf."""
    reference = reference or {}
    for name, t in state.items():
        if not t.is_floating_point():
            continue
        ok = torch.isfinite(t)
        ref = reference.get(name)
        if ref is not None and ref.is_meta and name in masks:
            bad = int(torch.isnan(t).sum()) + int(torch.isposinf(t).sum())
        elif (
            ref is not None
            and not ref.is_meta
            and ref.shape == t.shape
            and not bool(torch.isfinite(ref).all())
        ):
            bad = int((ok != torch.isfinite(ref)).sum()) + int(torch.isnan(t).sum())
        else:
            bad = int((~ok).sum())
        if bad:
            return name, bad
    return None
