"""The configs of the quality commands (compare, eval, sweep-budget, attention), light to
import: the CLI builds its flags from their fields without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from sasq.errors import UserError
from sasq.exporter.qdq_config import BIT_WIDTHS
from sasq.tools.quality.eval_precision import PRECISION_ROWS


@dataclass(frozen=True)
class CompareConfig:
    n: int = 8
    seed: int = 0
    atol: float = 1e-4
    rtol: float = 1e-4


DEFAULT_ROWS = (
    "peer-minmax",
    "peer-entropy",
    "peer-linears",
    "plain",
    "fp32-cache",
    "kv6",
    "kv4",
    "kv4-shift-sum",
    "resample",
    "dgc",
    "shift-sum",
    "both",
    "gps-stwq",
    "paper-ref",
    "v-only",
    "v-only-shift-sum",
)


ROWS = (*DEFAULT_ROWS, *PRECISION_ROWS)  # the TensorRT precision rows on request (--rows)


@dataclass(frozen=True)
class EvalConfig:
    per_class: int = 100  # 1,000 samples on the 10-class default
    bits: tuple[str, ...] = ("W8A8", "W6A6", "W4A8")
    rows: tuple[str, ...] = DEFAULT_ROWS
    calib_samples: int = 32
    seed: int = 0
    batch: int = 100
    progress: bool = True
    bootstrap: int = 1000  # replicates of the 95% intervals


@dataclass(frozen=True)
class SweepConfig:
    budgets: tuple[float, ...] = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.05)
    bits: tuple[str, ...] = ("W8A8", "W6A6")
    kv_bits: tuple[int | None, ...] = (None, 4)  # None: the cache at the activations' bits
    per_class: int = 100
    calib_samples: int = 32
    seed: int = 0
    bootstrap: int = 1000
    bench_batch: int = 8
    bench_repeats: int = 5
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.budgets or any(not 0.0 <= b <= 1.0 for b in self.budgets):
            raise UserError(f"budgets must be in [0, 1], got {self.budgets}")
        if 0.0 not in self.budgets:
            raise UserError("the budgets must include 0 (plain: the baseline of the differences)")
        if unknown := [b for b in self.bits if b not in BIT_WIDTHS]:
            raise UserError(f"unknown bit widths {unknown}; choose from {', '.join(BIT_WIDTHS)}")
        if any(k is not None and not 2 <= k <= 8 for k in self.kv_bits):
            raise UserError(f"cache bits must be in 2..8, got {self.kv_bits}")


@dataclass(frozen=True)
class AttentionConfig:
    images: int = 64
    batch: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images < 1 or self.batch < 1:
            raise UserError("attention needs --n >= 1 and --batch >= 1")
