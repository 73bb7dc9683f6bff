"""What calibration and GPS run with: their configs, light to import (the CLI builds its
flags from their fields without loading torch or ONNX Runtime).

``CalibConfig`` is the record a cache keeps (``sasq.quant.settings.CalibSettings``: the
observer, resampling, selection, samples, seed; their defaults written there, once) plus
how the rollouts run (candidates, batch, threads, progress).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sasq.quant.settings import CalibSettings, ResampleMode


@dataclass(frozen=True)
class CalibConfig(CalibSettings):
    candidates_factor: int = 2  # DGC: rows are chosen from factor x num_samples rollouts
    batch: int = 32  # rollout batch; resampling is joint over the tokens of one batch
    threads: int = 2
    progress: bool = True

    def settings(self) -> CalibSettings:
        """The part a cache records."""
        return CalibSettings(**{f.name: getattr(self, f.name) for f in fields(CalibSettings)})


@dataclass(frozen=True)
class GPSConfig:
    """num_samples: calibration images (CFG pairs) rolled out by the FP model in PyTorch;
    w_bits / a_bits: the bit widths the scales are balanced for; max_tokens: tokens per
    layer kept (uniformly at random) for the a_i / b_i sums; ranges use every token."""

    num_samples: int = 32
    w_bits: int = 8
    a_bits: int = 8
    resample: ResampleMode = ResampleMode.OURS
    seed: int = 0
    batch: int = 32
    max_tokens: int = 4096
    alpha: float = 0.5
    progress: bool = True
