"""95% bootstrap intervals for the quality numbers, paired across rows.

Every row of ``sasq eval`` generates the same labels with the same seed, so sample i of a
quantized row is the quantized twin of sample i of FP. One set of bootstrap draws (indices
into the samples) is shared by every row: a metric's replicates are then paired across
rows, and the interval of a row-to-row difference comes from the differences of the
replicates, which is much tighter than two independent intervals would suggest.

Percentile intervals (the 2.5% and 97.5% replicates). The real test digits that FID is
measured against are held fixed: the intervals say how much the number would move with
another draw of generated samples, not with another test set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from sasq.metrics import frechet_distance, inception_score

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float

    def as_dict(self, digits: int = 4) -> dict:
        return {k: round(float(v), digits) for k, v in vars(self).items()}

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def excludes(self, x: float) -> bool:
        return not self.lo <= x <= self.hi


def draws(n: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, n) indices drawn with replacement, the same for every row."""
    if n < 2 or replicates < 1:
        raise ValueError(f"bootstrap needs n >= 2 samples and >= 1 replicate: {n}, {replicates}")
    return np.random.default_rng(seed).integers(0, n, size=(replicates, n))


def percentile_interval(value: float, reps: np.ndarray) -> Interval:
    a = (1 - LEVEL) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return Interval(float(value), float(lo), float(hi))


@dataclass
class SampleScores:
    """What one row's samples give the metrics: classifier outputs and token agreement."""

    probs: np.ndarray  # (N, K)
    feats: np.ndarray  # (N, F)
    correct: np.ndarray  # (N,) bool: the classifier read the label
    agreement: np.ndarray  # (N,) per-sample token agreement with FP, mean over scales


def _moments(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def metric_fns(
    fp_feats: np.ndarray, real_feats: np.ndarray
) -> dict[str, Callable[[SampleScores, np.ndarray], float]]:
    """Each quality number as a function of a row's samples and an index draw. FID2FP
    takes FP's samples at the same indices: the pairing of quantized and FP twins."""
    real = _moments(real_feats)

    def fid(s: SampleScores, i: np.ndarray) -> float:
        return frechet_distance(*_moments(s.feats[i]), *real)

    def fid2fp(s: SampleScores, i: np.ndarray) -> float:
        return frechet_distance(*_moments(s.feats[i]), *_moments(fp_feats[i]))

    return {
        "IS": lambda s, i: inception_score(s.probs[i]),
        "FID": fid,
        "FID2FP": fid2fp,
        "class_acc": lambda s, i: float(s.correct[i].mean()),
        "token_agreement": lambda s, i: float(s.agreement[i].mean()),
    }


def replicates(
    fns: Mapping[str, Callable[[SampleScores, np.ndarray], float]],
    s: SampleScores,
    idx: np.ndarray,
) -> dict[str, tuple[float, np.ndarray]]:
    """metric -> (value on all samples, its values on every draw)."""
    every = np.arange(idx.shape[1])
    return {m: (f(s, every), np.array([f(s, i) for i in idx])) for m, f in fns.items()}


def intervals(reps: Mapping[str, tuple[float, np.ndarray]]) -> dict[str, Interval]:
    return {m: percentile_interval(v, r) for m, (v, r) in reps.items()}


def difference(
    a: Mapping[str, tuple[float, np.ndarray]], b: Mapping[str, tuple[float, np.ndarray]]
) -> dict[str, Interval]:
    """a - b per metric, with the interval of the paired replicate differences."""
    return {m: percentile_interval(a[m][0] - b[m][0], a[m][1] - b[m][1]) for m in a}


def difference_dicts(
    a: Mapping[str, tuple[float, np.ndarray]], b: Mapping[str, tuple[float, np.ndarray]]
) -> dict[str, dict]:
    """``difference`` as JSON: per metric {value, lo, hi, significant}, significant when the
    paired interval excludes 0."""
    return {
        m: iv.as_dict() | {"significant": iv.excludes(0.0)} for m, iv in difference(a, b).items()
    }
