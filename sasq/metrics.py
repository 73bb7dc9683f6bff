"""Quality numbers for the FP-vs-quantized comparisons, in plain numpy.

FID and Inception Score take features/probabilities from the digits classifier
(tools/quality/classifier.py); PSNR and SQNR compare images or tensors element-wise; token agreement
says at which scale a quantized rollout first departs from the FP one under the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _np64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def fid(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fit to two (N, F) feature sets."""
    a_NF, b_NF = _np64(feat_a), _np64(feat_b)
    if a_NF.ndim != 2 or b_NF.ndim != 2 or a_NF.shape[1] != b_NF.shape[1]:
        raise ValueError(f"fid needs (N, F) arrays with equal F, got {a_NF.shape}, {b_NF.shape}")
    if min(a_NF.shape[0], b_NF.shape[0]) < 2:
        raise ValueError("fid needs at least 2 samples per set to estimate a covariance")
    return frechet_distance(
        a_NF.mean(0),
        np.atleast_2d(np.cov(a_NF, rowvar=False)),
        b_NF.mean(0),
        np.atleast_2d(np.cov(b_NF, rowvar=False)),
    )


def frechet_distance(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)).

    The trace of the square root is the sum of the square roots of C_a C_b's eigenvalues:
    for two PSD matrices they are real and non-negative (C_a C_b is similar to
    C_a^(1/2) C_b C_a^(1/2)), so no matrix square root is needed. That is exact where
    sqrtm needs a ridge (singular covariances from dead ReLU units) and ~10x faster, which
    the bootstrap's thousands of FIDs need. Round-off gives tiny imaginary parts and
    negative eigenvalues: the real part is taken, clipped at 0, and the total clamped at 0.
    """
    eig = np.linalg.eigvals(cov_a @ cov_b)
    tr_sqrt = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def inception_score(probs_NK: np.ndarray, splits: int = 1) -> float:
    """exp(E_x KL(p(y|x) || p(y))), averaged over `splits` equal chunks (mean of the exps).

    Ranges from 1 (every image gets the same prediction) to K (confident and class-balanced).
    """
    p_NK = _np64(probs_NK)
    if p_NK.ndim != 2 or p_NK.shape[0] < splits or splits < 1:
        raise ValueError(f"inception_score needs (N, K) with N >= splits >= 1, got {p_NK.shape}")
    scores = []
    for chunk_nK in np.array_split(p_NK, splits):
        py_1K = chunk_nK.mean(0, keepdims=True)
        # 0 * log(0 / q) = 0: where p is 0 the term vanishes whatever q is.
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_nK = np.where(chunk_nK > 0, chunk_nK * (np.log(chunk_nK) - np.log(py_1K)), 0.0)
        scores.append(math.exp(float(kl_nK.sum(1).mean())))
    return float(np.mean(scores))


def psnr(a: ArrayLike, b: ArrayLike, data_range: float = 2.0) -> float:
    """10 log10(data_range^2 / MSE); data_range 2 for images in [-1, 1]; inf when equal."""
    mse = float(np.mean((_np64(a) - _np64(b)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def sqnr_db(ref: ArrayLike, test: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio 10 log10(sum ref^2 / sum (ref - test)^2), in dB."""
    ref_np, test_np = _np64(ref), _np64(test)
    noise = float(np.sum((ref_np - test_np) ** 2))
    if noise == 0.0:
        return math.inf
    signal = float(np.sum(ref_np**2))
    return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)


def token_agreement(a_list: Sequence[ArrayLike], b_list: Sequence[ArrayLike]) -> list[float]:
    """Per scale, the fraction of positions where the two rollouts chose the same token id."""
    if len(a_list) != len(b_list):
        raise ValueError(f"token_agreement: {len(a_list)} scales vs {len(b_list)}")
    out = []
    for si, (a, b) in enumerate(zip(a_list, b_list, strict=True)):
        a_np = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        b_np = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
        if a_np.shape != b_np.shape:
            raise ValueError(f"token_agreement: scale {si} shapes {a_np.shape} vs {b_np.shape}")
        out.append(float(np.mean(a_np == b_np)) if a_np.size else 1.0)
    return out
