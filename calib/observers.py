"""Streaming range observers for activations (their scales: ``sasq.quant.scales``).

An observer sees one tensor's values over many calibration batches (``update`` per batch)
and returns one symmetric amax (signed int8, zero point 0). Memory stays bounded whatever
the number of batches: a running amax and, for the histogram methods, a fixed number of
bins of |x| over [0, hist_max]. When a batch exceeds hist_max the histogram is merged by an
integer factor k (old bin j -> new bin j // k), which is exact: every old bin lies inside
one new bin, so no count is ever split by interpolation.

Non-finite values (NaN/Inf) are dropped and counted, never fatal: ``warning`` says how many,
for the calibration report. A tensor that was only ever zero has range 0 and ``is_zero``
set; ``sasq.quant.scales.activation_scale`` turns such a range into a tiny positive scale
so that a Q/DQ writer never divides by zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sasq.calib.thresholds import entropy_threshold, mse_threshold, percentile_threshold
from sasq.quant.settings import ObserverMethod


@dataclass(frozen=True)
class ObserverConfig:
    """num_bins: histogram resolution of |x|. percentile: of |x|, for "percentile".
    bits: the signed integer width; entropy uses 2^(bits-1) levels (TensorRT's 128 for
    int8), mse 2^(bits-1) - 1 levels a side (127)."""

    num_bins: int = 2048
    percentile: float = 99.99
    bits: int = 8

    def __post_init__(self) -> None:
        if self.num_bins < 2:
            raise ValueError("num_bins must be >= 2")
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError("percentile must be in (0, 100]")
        if not 2 <= self.bits <= 16:
            raise ValueError("bits must be in [2, 16]")


class MinMaxObserver:
    """Running max of |x|: the exact symmetric range, sensitive to every outlier."""

    def __init__(self, cfg: ObserverConfig | None = None):
        self.cfg = cfg or ObserverConfig()
        self.amax = 0.0
        self.count = 0  # finite values seen
        self.nonfinite = 0  # NaN/Inf values dropped

    def update(self, x: np.ndarray) -> None:
        a = np.abs(np.asarray(x, dtype=np.float64).ravel())
        finite = np.isfinite(a)
        bad = a.size - int(finite.sum())
        if bad:
            self.nonfinite += bad
            a = a[finite]
        if a.size == 0:
            return
        self.count += a.size
        self.amax = max(self.amax, float(a.max()))
        self._observe(a)

    def _observe(self, a: np.ndarray) -> None:
        """Subclasses keep more than the max."""

    def range(self) -> float:
        return self.amax

    @property
    def is_zero(self) -> bool:
        """Nothing but zeros (or nothing at all) was observed: the range is 0."""
        return self.amax == 0.0

    @property
    def warning(self) -> str | None:
        if not self.nonfinite:
            return None
        total = self.count + self.nonfinite
        return f"dropped {self.nonfinite} non-finite values (NaN/Inf) of {total}"


class HistogramObserver(MinMaxObserver):
    """Running amax plus a fixed-size histogram of |x|; subclasses pick the threshold."""

    def __init__(self, cfg: ObserverConfig | None = None):
        super().__init__(cfg)
        self.counts_H = np.zeros(self.cfg.num_bins, dtype=np.float64)
        self.hist_max = 0.0  # right edge of the last bin; 0 until a non-zero value arrives

    @property
    def width(self) -> float:
        return self.hist_max / self.cfg.num_bins

    def _observe(self, a: np.ndarray) -> None:
        m = float(a.max())
        if m > self.hist_max:
            if self.hist_max == 0.0:
                self.hist_max = m  # only zeros so far: they are in bin 0 for any width
            else:
                self._merge(math.ceil(m / self.hist_max))
        if self.hist_max == 0.0:
            self.counts_H[0] += a.size
            return
        H = self.cfg.num_bins
        j = np.minimum((a * (H / self.hist_max)).astype(np.int64), H - 1)
        self.counts_H += np.bincount(j, minlength=H)

    def _merge(self, k: int) -> None:
        """Widen every bin k times: old bin j goes into new bin j // k."""
        H = self.cfg.num_bins
        merged = np.bincount(np.arange(H) // k, weights=self.counts_H, minlength=H)
        self.counts_H = merged[:H]
        self.hist_max *= k

    def range(self) -> float:
        if self.is_zero:
            return 0.0
        return min(self._threshold(), self.amax)

    def _threshold(self) -> float:
        raise NotImplementedError


class PercentileObserver(HistogramObserver):
    """The given percentile of |x| (default 99.99): drops the rarest outliers."""

    def _threshold(self) -> float:
        return percentile_threshold(self.counts_H, self.width, self.cfg.percentile)


class EntropyObserver(HistogramObserver):
    """TensorRT-style KL-divergence calibration over the histogram."""

    def _threshold(self) -> float:
        return entropy_threshold(self.counts_H, self.width, levels=2 ** (self.cfg.bits - 1))


class MseObserver(HistogramObserver):
    """The clipping threshold of least expected quantization MSE."""

    def _threshold(self) -> float:
        return mse_threshold(self.counts_H, self.width, qmax=2 ** (self.cfg.bits - 1) - 1)


Observer = MinMaxObserver  # the common interface: update(x), range(), is_zero, warning

_OBSERVERS: dict[ObserverMethod, type[MinMaxObserver]] = {
    ObserverMethod.MINMAX: MinMaxObserver,
    ObserverMethod.PERCENTILE: PercentileObserver,
    ObserverMethod.ENTROPY: EntropyObserver,
    ObserverMethod.MSE: MseObserver,
}


def make_observer(method: ObserverMethod | str, cfg: ObserverConfig | None = None) -> Observer:
    """A fresh observer of the given method."""
    return _OBSERVERS[ObserverMethod(method)](cfg)
