"""How a calibration cache was made: the settings it records and the names of their choices.

The enums are the vocabulary of those choices (observer, codebook resampling, row
selection). They live here, beside the cache format that stores them, so the exporter and
the engines can read a cache without importing calibration; ``sasq.calib``'s observers,
resampling and selection import their enum from here and implement what it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ObserverMethod(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"


class ResampleMode(str, Enum):
    NONE = "none"  # keep the sampled tokens (plain rollouts)
    OURS = "ours"  # the Shift-and-Sum paper's resampling (sasq.calib.resample)


class SelectionMethod(str, Enum):
    ALL = "all"  # keep every row
    RANDOM = "random"  # a seeded random subset
    DGC = "dgc"  # distribution-guided (sasq.calib.selection)


@dataclass(frozen=True)
class CalibSettings:
    """The settings a cache records; their defaults are calibration's
    (``sasq.calib.config.CalibConfig`` extends this with how the rollouts run)."""

    observer: ObserverMethod = ObserverMethod.ENTROPY
    percentile: float = 99.99
    num_samples: int = 32  # images; each is a conditional + unconditional row pair
    resample: ResampleMode = ResampleMode.OURS
    selection: SelectionMethod = SelectionMethod.ALL
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "observer", ObserverMethod(self.observer))
        object.__setattr__(self, "resample", ResampleMode(self.resample))
        object.__setattr__(self, "selection", SelectionMethod(self.selection))
