"""The config of ``sasq train-default``, light to import (the CLI builds its flags from its
fields without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    vae_steps: int = 800
    vae_batch: int = 64
    vae_lr: float = 2e-3
    var_steps: int = 1000
    var_batch: int = 128
    var_lr: float = 2e-3
    var_wd: float = 0.05
    shifts: int = 1  # +-pixels of shift augmentation for the VAR's token pyramids
    threads: int = 1  # one thread: fast for these small ops, and robust to a busy machine
