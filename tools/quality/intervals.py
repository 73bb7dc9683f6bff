"""95% intervals for the quality numbers by half-sampling, paired across rows.

What an interval is for. FID and IS are biased at a finite sample count (FID up, IS down,
both by O(1/n): a covariance and a class marginal estimated from n images), so the number
at n samples is a quantity of its own, as FID-50k is. The interval is for that quantity:
where the number lies, on average, over other draws of the same n generated samples (the
real test digits that FID is measured against held fixed). Rows of one evaluation have the
same n, so their numbers and differences compare like with like.

Why not the bootstrap. Resampling n of n with replacement duplicates images: a duplicated
image shrinks the covariance's effective rank and the class marginal's spread, so every
FID replicate is biased up and every IS replicate down, and a percentile interval of the
replicates can miss the number it is about (FID 11.4 with [17.6, 53.0] at 50 samples).

The method (subsampling without replacement, Politis & Romano). Each replicate draws
m = n // 2 distinct samples. For a smooth statistic of means (FID, IS, accuracy, token
agreement, SQNR in dB) the half-sample's deviation from the full value has, given the
sample, variance s^2 (1/m - 1/n) (the finite-population correction), against s^2 / n for
the full value around its mean: so sqrt(m / (n - m)) * (theta_m - theta_n), which is 1 at
m = n/2, has the spread of theta_n around its mean. Its centre is shifted by the bias of m
samples over n (E theta_m - E theta_n); the deviations are centred on their mean, which
removes that shift, and the interval is the basic one, [theta_n - q97.5, theta_n - q2.5]
of the centred deviations. It holds theta_n (q2.5 <= 0 <= q97.5 of centred deviations;
``interval`` makes sure of it where a lopsided distribution would not).
Where a statistic is degenerate (FID2FP of nearly identical rows, whose spread falls as
1/n rather than 1/sqrt(n)) the sqrt-rate correction makes the interval wider than needed:
conservative, never too narrow. tests/test_intervals.py measures the coverage.

Strata. ``sasq eval`` generates a fixed number of images of every class, so each draw takes
half of every class's samples (``draws(strata=labels)``), as another draw of its samples
would keep the class counts.

Pairing. Every row of ``sasq eval`` generates the same labels with the same seed, so sample
i of a quantized row is the quantized twin of sample i of FP. One set of half-samples is
shared by every row: a metric's deviations are paired across rows, and a row-to-row
difference gets its interval from the differences of the deviations (the same formula:
they are linear in the replicates), much tighter than two separate intervals suggest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from sasq.metrics import frechet_distance, inception_score

LEVEL = 0.95
MIN_SAMPLES = 4  # two per half: FID needs two samples to estimate a covariance
# The range each quality number can take. A basic interval reflects the deviations about
# the value and can cross a bound (an accuracy of 0.998 with [0.998, 1.002]); the quantity
# it is for cannot, so the interval is cut there (its coverage is unchanged).
BOUNDS = {
    "class_acc": (0.0, 1.0),
    "token_agreement": (0.0, 1.0),
    "FID": (0.0, math.inf),
    "FID2FP": (0.0, math.inf),
    "IS": (1.0, math.inf),
}
# Means of a per-sample number: a half-sample's mean has exactly the full mean as its
# expectation (sampling without replacement), so there is no bias to remove, and the
# deviations' own mean would only add the draws' noise (with one differing image in 500,
# that noise alone decided whether a paired difference of 0.002 "excluded 0").
LINEAR = frozenset({"class_acc", "token_agreement"})


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
        """``x`` outside the interval by more than round-off: a bound computed as value minus
        a deviation that equals it (two misses of 300: 0.00667 - 0.00667) can land 1e-16
        short of 0, which must not read as a significant difference."""
        tol = 1e-12 * max(1.0, abs(self.lo), abs(self.hi))
        return not self.lo - tol <= x <= self.hi + tol


@dataclass(frozen=True)
class HalfSamples:
    """``replicates`` draws of m = n // 2 distinct indices out of n, the same for every row."""

    n: int
    idx: np.ndarray  # (replicates, m)

    @property
    def rate(self) -> float:
        """sqrt(m / (n - m)): scales a half-sample's deviation to the full sample's spread."""
        m = self.idx.shape[1]
        return float(np.sqrt(m / (self.n - m)))

    def deviations(self, value: float, fn: Callable[[np.ndarray], float]) -> np.ndarray:
        """The rate-corrected deviations ``rate * (fn(half) - value)``, one per draw."""
        return self.rate * (np.array([fn(i) for i in self.idx], dtype=np.float64) - value)


def draws(n: int, replicates: int, seed: int, strata: np.ndarray | None = None) -> HalfSamples:
    """The half-samples of n samples, from ``seed`` alone (so every row gets the same).

    ``strata`` (n labels): half of each label's samples in every draw. ``sasq eval`` fixes
    how many images of each class it generates, so another draw of its samples has the
    same class counts; unstratified half-samples would vary them, a variation the number
    never has (on the default model that tripled FID's interval: spread over 30 seeds
    0.58, unstratified half-sampling 1.48, stratified 0.57). With every label's count even
    (or all odd alike) each stratum's rate is the overall sqrt(m / (n - m)). Labels with
    fewer than two samples cannot be halved: then the draws are not stratified."""
    if n < MIN_SAMPLES or replicates < 1:
        raise ValueError(
            f"half-sampling needs n >= {MIN_SAMPLES} samples and >= 1 replicate: {n}, {replicates}"
        )
    rng = np.random.default_rng(seed)
    groups = [np.arange(n, dtype=np.int32)]
    if strata is not None:
        if len(strata) != n:
            raise ValueError(f"{len(strata)} strata labels for {n} samples")
        by_label = [np.flatnonzero(strata == s).astype(np.int32) for s in np.unique(strata)]
        if min(len(g) for g in by_label) >= 2:
            groups = by_label
    # Each row of each group permuted on its own, cut at half: distinct indices per draw.
    idx = np.concatenate(
        [rng.permuted(np.tile(g, (replicates, 1)), axis=1)[:, : len(g) // 2] for g in groups],
        axis=1,
    )
    return HalfSamples(n, np.ascontiguousarray(idx))


def interval(
    value: float,
    dev: np.ndarray,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    linear: bool = False,
) -> Interval:
    """The basic interval of ``value`` from its rate-corrected deviations, centred on their
    mean (on 0 for a ``linear`` statistic, a mean, which half-samples do not bias):
    [value - (q97.5 - centre), value - (q2.5 - centre)]; cut to ``bounds``, the range of
    the statistic. The centre lies between the quantiles unless over 97.5% of the
    deviations fall on one side of it; should that happen the interval is widened to hold
    ``value`` (which can only raise its coverage)."""
    a = (1 - LEVEL) / 2
    q_lo, q_hi = np.quantile(dev, [a, 1 - a])
    centre = 0.0 if linear else float(np.mean(dev))
    lo, hi = min(value - (q_hi - centre), value), max(value - (q_lo - centre), value)
    return Interval(float(value), max(lo, bounds[0]), min(hi, bounds[1]))


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
    hs: HalfSamples,
) -> dict[str, tuple[float, np.ndarray]]:
    """metric -> (value on all samples, its rate-corrected deviation on every half-sample)."""
    if len(s.agreement) != hs.n:
        raise ValueError(f"{len(s.agreement)} samples, half-samples drawn for {hs.n}")
    every = np.arange(hs.n)
    out = {}
    for m, f in fns.items():
        value = f(s, every)
        out[m] = (value, hs.deviations(value, lambda i, f=f: f(s, i)))
    return out


def intervals(reps: Mapping[str, tuple[float, np.ndarray]]) -> dict[str, Interval]:
    """metric -> its interval, cut to the metric's range (``BOUNDS``)."""
    unbounded = (-math.inf, math.inf)
    return {m: interval(v, d, BOUNDS.get(m, unbounded), m in LINEAR) for m, (v, d) in reps.items()}


def difference(
    a: Mapping[str, tuple[float, np.ndarray]], b: Mapping[str, tuple[float, np.ndarray]]
) -> dict[str, Interval]:
    """a - b per metric, with the interval of the paired deviations' differences."""
    return {m: interval(a[m][0] - b[m][0], a[m][1] - b[m][1], linear=m in LINEAR) for m in a}


def difference_dicts(
    a: Mapping[str, tuple[float, np.ndarray]], b: Mapping[str, tuple[float, np.ndarray]]
) -> dict[str, dict]:
    """``difference`` as JSON: per metric {value, lo, hi, significant}, significant when the
    paired interval excludes 0."""
    return {
        m: iv.as_dict() | {"significant": iv.excludes(0.0)} for m, iv in difference(a, b).items()
    }
