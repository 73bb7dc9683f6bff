"""Clipping thresholds from a histogram of |x|: percentile, entropy (KL) and MSE searches.

Pure functions of ``(counts_H, width)``: bin j holds the values of |x| in
[j * width, (j + 1) * width). The streaming observers (observers.py) own the histogram; these
only choose where to clip it. Every threshold is a symmetric amax for signed int8 with zero
point 0, so only |x| matters.
"""

from __future__ import annotations

import numpy as np


def percentile_threshold(counts_H: np.ndarray, width: float, percentile: float) -> float:
    """The ``percentile`` of |x|, linearly interpolated inside the bin where it falls."""
    counts_H = np.asarray(counts_H, dtype=np.float64)
    total = counts_H.sum()
    if total <= 0:
        return 0.0
    rank = min(max(percentile, 0.0), 100.0) / 100.0 * total
    cum_H = np.cumsum(counts_H)
    j = min(int(np.searchsorted(cum_H, rank, side="left")), len(counts_H) - 1)
    before = cum_H[j] - counts_H[j]
    frac = (rank - before) / counts_H[j] if counts_H[j] > 0 else 1.0
    return float((j + min(max(frac, 0.0), 1.0)) * width)


def entropy_threshold(counts_H: np.ndarray, width: float, levels: int = 128) -> float:
    """TensorRT's legacy entropy calibration (as in pytorch-quantization's
    ``_compute_amax_entropy``): for every candidate end bin i >= ``levels``,

    - P = counts[:i] with all counts beyond i added to bin i - 1 (clipping reference);
    - Q = counts[:i] merged into ``levels`` near-equal groups, each group's total spread
      evenly over its non-empty bins (what ``levels`` quantization levels can represent);

    and return the right edge of the i minimising KL(P || Q) (the largest such i on ties).
    A candidate where P has mass that Q cannot represent (the clipped mass lands in an empty
    bin) scores infinity, as scipy's ``entropy`` would.
    """
    counts_H = np.asarray(counts_H, dtype=np.float64)
    nz = np.flatnonzero(counts_H)
    if len(nz) == 0:
        return 0.0
    end = int(nz[-1]) + 1  # bins past the last non-empty one cannot win: trim them
    if end <= levels:
        return float(end * width)
    counts_H = counts_H[:end]
    suffix_H = np.concatenate((np.cumsum(counts_H[::-1])[::-1], [0.0]))  # sum of counts[i:]
    best_i, best_kl = end, np.inf
    for i in range(levels, end + 1):
        p_i = counts_H[:i].copy()
        p_i[-1] += suffix_H[i]
        nonempty_i = counts_H[:i] > 0
        group_i = np.arange(i) * levels // i
        q_sum_G = np.bincount(group_i, weights=counts_H[:i], minlength=levels)
        q_cnt_G = np.bincount(group_i, weights=nonempty_i, minlength=levels)
        q_i = np.where(nonempty_i, q_sum_G[group_i] / np.maximum(q_cnt_G[group_i], 1), 0.0)
        if np.any((p_i > 0) & (q_i <= 0)):
            continue  # infinite divergence
        p_i, q_i = p_i / p_i.sum(), q_i / q_i.sum()
        m = p_i > 0
        kl = float(np.sum(p_i[m] * np.log(p_i[m] / q_i[m])))
        if kl <= best_kl:
            best_i, best_kl = i, kl
    return float(best_i * width)


def _rounding_sq_integral(x: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Integral from 0 to x of (t - step * round(t / step))^2 dt: whole periods contribute
    step^3 / 12 each, the partial one a cubic piece."""
    n = np.floor(x / step)
    u = x - n * step
    half = u < step / 2
    partial = np.where(half, u**3 / 3, step**3 / 12 + (u - step) ** 3 / 3)
    return n * step**3 / 12 + partial


def expected_mse(counts_H: np.ndarray, width: float, thresholds_T: np.ndarray, qmax: int):
    """Expected squared error of symmetric quantization with amax = each threshold (T,),
    scale = amax / qmax, values assumed uniform inside each bin: rounding error below the
    threshold, clipping error above. Exact under that assumption (no bin-centre shortcut,
    which understates the error when a bin is as wide as a quantization step)."""
    counts_H = np.asarray(counts_H, dtype=np.float64)
    nz = np.flatnonzero(counts_H)
    c_B, lo_B = counts_H[nz], nz * width
    hi_B = lo_B + width
    t_T1 = np.asarray(thresholds_T, dtype=np.float64)[:, None]
    step_T1 = t_T1 / qmax
    a_TB = np.minimum(lo_B, t_T1)
    b_TB = np.minimum(hi_B, t_T1)
    inside = _rounding_sq_integral(b_TB, step_T1) - _rounding_sq_integral(a_TB, step_T1)
    ca_TB = np.maximum(lo_B, t_T1) - t_T1
    cb_TB = np.maximum(hi_B, t_T1) - t_T1
    clipped = (cb_TB**3 - ca_TB**3) / 3
    return ((inside + clipped) / width) @ c_B / c_B.sum()


def mse_threshold(counts_H: np.ndarray, width: float, qmax: int = 127, chunk: int = 256) -> float:
    """The bin edge minimising ``expected_mse`` (int8 symmetric: qmax = 127 levels a side);
    searched over every edge up to the last non-empty bin, in chunks to bound memory."""
    counts_H = np.asarray(counts_H, dtype=np.float64)
    nz = np.flatnonzero(counts_H)
    if len(nz) == 0:
        return 0.0
    edges_T = np.arange(1, int(nz[-1]) + 2) * width
    best_t, best = edges_T[-1], np.inf
    for start in range(0, len(edges_T), chunk):
        t_T = edges_T[start : start + chunk]
        mse_T = expected_mse(counts_H, width, t_T, qmax)
        k = int(np.argmin(mse_T))
        if mse_T[k] < best:
            best_t, best = t_T[k], mse_T[k]
    return float(best_t)
