"""sasq.models: the PyTorch reference VQVAE + VAR, and the embedded default model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sasq.models.checkpoint import CheckpointError, assign_state, load_into, load_state_dict
from sasq.models.config import (
    ModelConfig,
    SamplingConfig,
    VARConfig,
    VQVAEConfig,
    official,
    tiny_default,
)
from sasq.models.released import RELEASED_VAE, infer_config, released_vae, released_var
from sasq.models.var import VAR
from sasq.models.vqvae import VQVAE
from sasq.untrusted import json_loads

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
# The embedded models by name: ``--model digits32`` where no folder of that name exists.
EMBEDDED = {"default": DEFAULT_DIR, "digits32": DEFAULT_DIR.parent / "digits32"}

__all__ = [
    "DEFAULT_DIR",
    "EMBEDDED",
    "VAR",
    "VQVAE",
    "CheckpointError",
    "LoadedModel",
    "ModelConfig",
    "SamplingConfig",
    "VARConfig",
    "VQVAEConfig",
    "build",
    "load_into",
    "load_model",
    "load_state_dict",
    "official",
    "tiny_default",
]


@dataclass
class LoadedModel:
    cfg: ModelConfig
    vqvae: VQVAE
    var: VAR
    path: Path | None = None


def build(cfg: ModelConfig) -> LoadedModel:
    """Randomly initialised VQVAE + VAR of the given sizes, in eval mode."""
    from sasq.models.memory import build_estimate, require_fits

    require_fits(build_estimate(cfg), "building this model", "check the config's sizes")
    return LoadedModel(cfg, VQVAE(cfg.vqvae).eval(), VAR(cfg.var, cfg.vqvae).eval())


def load_model(
    model_dir: str | Path | None = None,
    *,
    vae: str | Path | None = None,
    var: str | Path | None = None,
) -> LoadedModel:
    """A model folder, or two checkpoint files; no argument loads the embedded default, and
    the name of an embedded model (``EMBEDDED``) loads it where no such folder exists.

    The folder holds ``vqvae.safetensors`` / ``var.safetensors`` (or ``.pth``), or the
    released names ``vae_ch160v4096z32.pth`` and ``var_d{depth}.pth``; ``vae`` / ``var`` name
    the files directly (they take precedence over the folder's). The config is the folder's
    ``config.json`` when there is one, else it is read off the weights (depth, width,
    scales, shared AdaLN) with the official sampling recipe (``sasq.models.released``).
    """
    if model_dir is None and vae is None and var is None:
        model_dir = DEFAULT_DIR
    d = Path(model_dir) if model_dir is not None else None
    if d is not None and not d.exists() and str(model_dir) in EMBEDDED:
        d = EMBEDDED[str(model_dir)]
    if d is not None and not d.is_dir():
        raise CheckpointError(f"{d}: not a sasq model folder (no such folder)")
    vae_path = Path(vae) if vae is not None else _find(d, "vqvae")
    var_path = Path(var) if var is not None else _find(d, "var")
    vae_sd, var_sd = load_state_dict(vae_path), load_state_dict(var_path)
    cfg_path = d / "config.json" if d is not None else None
    if cfg_path is not None and cfg_path.is_file():
        try:
            cfg = ModelConfig.from_dict(json_loads(cfg_path.read_text()))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{cfg_path}: invalid model config ({e})") from None
    else:
        cfg = infer_config(vae_sd, var_sd, str(var_path))
    with torch.device("meta"):  # the checkpoint's tensors become the weights: no random init
        m = build(cfg)
    assign_state(m.vqvae, vae_sd, vae_path)
    assign_state(m.var, var_sd, var_path)
    m.path = d if d is not None else var_path.parent
    return m


def _find(d: Path | None, name: str) -> Path:
    """``name``.safetensors / .pth in ``d``, else the released file name there."""
    if d is None:
        raise CheckpointError("`vae` and `var` go together (or give `model_dir` for the other)")
    for f in (d / f"{name}.safetensors", d / f"{name}.pth"):
        if f.is_file():
            return f
    found = released_vae(d) if name == "vqvae" else released_var(d)
    if found is None:
        released = RELEASED_VAE if name == "vqvae" else "var_d{depth}.pth"
        raise CheckpointError(f"{d}: missing {name}.safetensors (or the released {released})")
    return found
