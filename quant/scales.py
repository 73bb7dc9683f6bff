"""Symmetric int8 scales from ranges: per tensor for activations, per channel for weights.

Signed integers, zero point 0: a range amax maps to the scale amax / (2^(bits-1) - 1).
Calibration's observers produce the ranges; the Q/DQ writer and the quantizer turn them
into scales with these functions, so a range means the same scale everywhere.
"""

from __future__ import annotations

import numpy as np

# The scale given to an all-zero tensor or channel, where any positive scale is exact: the
# smallest normal fp16 (exact in fp32 too), so it survives a graph whose rest runs in fp16.
MIN_SCALE = 2.0**-14


def activation_scale(amax: float, bits: int = 8) -> float:
    """Per-tensor Q/DQ scale amax / (2^(bits-1) - 1); ``MIN_SCALE`` for a zero range, which
    would otherwise make QuantizeLinear divide by zero."""
    return float(amax) / (2 ** (bits - 1) - 1) if amax > 0 else MIN_SCALE


def weight_scales_per_channel(W: np.ndarray, bits: int = 8, axis: int = 1) -> np.ndarray:
    """Symmetric per-output-channel scales along ``axis`` (1: the N axis of a MatMul weight
    [K, N]; 0 for a Gemm weight with transB): amax over the other axes / (2^(bits-1) - 1),
    all-zero channels get ``MIN_SCALE``. Raises ValueError on non-finite weights, which no
    scale can represent."""
    W = np.asarray(W, dtype=np.float64)
    if not np.all(np.isfinite(W)):
        raise ValueError("weight has non-finite values (NaN/Inf): cannot choose a scale")
    axis = axis % W.ndim
    other = tuple(d for d in range(W.ndim) if d != axis)
    amax_N = np.abs(W).max(axis=other) if other else np.abs(W)
    return np.where(amax_N > 0, amax_N / (2 ** (bits - 1) - 1), MIN_SCALE)
