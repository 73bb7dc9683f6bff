"""sasq.models: the PyTorch reference VQVAE + VAR, and the embedded default model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sasq.models.checkpoint import CheckpointError, load_into, load_state_dict
from sasq.models.config import ModelConfig, SamplingConfig, VARConfig, VQVAEConfig, tiny_default
from sasq.models.var import VAR
from sasq.models.vqvae import VQVAE

DEFAULT_DIR = Path(__file__).resolve().parent / "default"

__all__ = [
    "DEFAULT_DIR",
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


def load_model(model_dir: str | Path | None = None) -> LoadedModel:
    """A model folder: ``config.json``, ``vqvae.safetensors`` and ``var.safetensors``
    (or ``.pth`` state dicts in the official format). ``None`` loads the embedded default."""
    d = Path(model_dir) if model_dir is not None else DEFAULT_DIR
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{d}: not a sasq model folder (no config.json)")
    try:
        cfg = ModelConfig.from_dict(json.loads(cfg_path.read_text()))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{cfg_path}: invalid model config ({e})") from None
    m = build(cfg)
    for name, module in (("vqvae", m.vqvae), ("var", m.var)):
        files = [d / f"{name}.safetensors", d / f"{name}.pth"]
        found = next((f for f in files if f.is_file()), None)
        if found is None:
            raise CheckpointError(f"{d}: missing {name}.safetensors")
        load_into(module, found)
    m.path = d
    return m
