"""Distribution-guided calibration selection (DGC, PTQ4ARVG), and measures of what it does.

A CFG rollout of B images gives 2B rows: B conditional and B unconditional. Unconditional
rows look much alike (one "class"), so a calibration set that keeps them half and half
spends half its budget on redundant activations. DGC keeps k of the 2B rows, choosing the
split between the halves from how far the rows lie from the feature distribution.

What PTQ4ARVG's released code (``VAR/sample_cali_dgc.py``) does: features = last block's
output at token 0; Mahalanobis distance of every row to the mean of *its own half*, with
the pseudo-inverse of that half's covariance; pct = fraction of conditional rows among the
k largest of all 2B distances (0.5 when the two halves' distances are allclose); then it
keeps round(pct * k) conditional and the rest unconditional rows, taking the first rows of
each half. Two properties of that rule matter here: a distance to a half's own
distribution is affine-invariant, so a tight unconditional cloud scores the same as a wide
conditional one; and with F >= B - 1 features every in-sample Mahalanobis distance under
the pseudo-inverse equals (B - 1) / sqrt(B) (the leverages of centred data spanning its own
subspace are all 1 - 1/B), so the code falls back to 0.5 for VAR-d16's 1024 features and
128 samples.

What this module implements (``Reference.POOLED``, the default): distances to the pooled
distribution of both halves (mean and covariance of all 2B rows), the covariance shrunk
towards a scaled identity, (1 - a) C + a tr(C) / F I, so that it is invertible and
distances stay informative when F >= 2B - 1. A spread-out conditional half then scores
higher than a tight unconditional one. The split is the released rule: k_cond = number of
conditional rows among the k largest distances (exactly half, k_cond = round(k / 2), when
all distances are allclose), and within each half the rows farthest from the distribution
are kept (the paper: the samples adding the most distributional information), which makes
the selection the k rows of largest distance, ties broken by lower index.
``Reference.PER_HALF`` reproduces the released distances (each half to itself, with the
same shrinkage; ``shrinkage=0`` gives the released pseudo-inverse exactly).

``frechet_to_pool`` measures what a selection changes: the Frechet distance between the
selected rows' features and all rows' features (compare with a random subset of the same
size); ``gaussian_entropy`` is the differential entropy of a Gaussian fit, the paper's
notion of "distributional information".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Reference(str, Enum):
    POOLED = "pooled"  # distance to the distribution of both halves together
    PER_HALF = "per_half"  # distance of each half to itself (PTQ4ARVG's released code)


@dataclass(frozen=True)
class DGCConfig:
    reference: Reference = Reference.POOLED
    shrinkage: float = 0.1  # a in (1 - a) C + a tr(C)/F I; 0: pseudo-inverse of C
    tie_atol: float = 1e-3  # halves' distances allclose -> split half and half (released)


def mahalanobis(x_NF: np.ndarray, ref_MF: np.ndarray, shrinkage: float = 0.1) -> np.ndarray:
    """Distance of each row of ``x_NF`` to the Gaussian fit of ``ref_MF`` (mean, shrunk
    covariance; pseudo-inverse when ``shrinkage`` is 0)."""
    x_NF, ref_MF = np.asarray(x_NF, np.float64), np.asarray(ref_MF, np.float64)
    mu_F = ref_MF.mean(0)
    c_MF = ref_MF - mu_F
    cov_FF = c_MF.T @ c_MF / max(len(ref_MF) - 1, 1)
    F = cov_FF.shape[0]
    if shrinkage > 0:
        cov_FF = (1 - shrinkage) * cov_FF + shrinkage * np.trace(cov_FF) / F * np.eye(F)
    inv_FF = np.linalg.pinv(cov_FF, hermitian=True)
    d_NF = x_NF - mu_F
    return np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", d_NF, inv_FF, d_NF), 0.0))


def dgc_distances(
    features_cond_NF: np.ndarray, features_uncond_NF: np.ndarray, cfg: DGCConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Mahalanobis distances of the conditional and unconditional rows (see the docstring)."""
    cond, uncond = np.asarray(features_cond_NF), np.asarray(features_uncond_NF)
    if cfg.reference is Reference.POOLED:
        pool = np.concatenate((cond, uncond))
        return mahalanobis(cond, pool, cfg.shrinkage), mahalanobis(uncond, pool, cfg.shrinkage)
    return mahalanobis(cond, cond, cfg.shrinkage), mahalanobis(uncond, uncond, cfg.shrinkage)


def select(
    features_cond_NF: np.ndarray,
    features_uncond_NF: np.ndarray,
    k: int,
    cfg: DGCConfig | None = None,
) -> np.ndarray:
    """Indices (sorted, int64) of the k rows kept, into the CFG batch order [cond; uncond]:
    index n < N is conditional row n, index N + n unconditional row n."""
    cfg = cfg or DGCConfig()
    N = len(features_cond_NF)
    if len(features_uncond_NF) != N:
        raise ValueError("conditional and unconditional halves must have the same rows")
    if not 0 < k <= 2 * N:
        raise ValueError(f"k must be in [1, {2 * N}], got {k}")
    d_cond_N, d_uncond_N = dgc_distances(features_cond_NF, features_uncond_NF, cfg)
    if np.allclose(d_cond_N, d_uncond_N, atol=cfg.tie_atol):
        k_cond = min(round(k / 2), N)
    else:
        order = np.argsort(-np.concatenate((d_cond_N, d_uncond_N)), kind="stable")
        k_cond = int((order[:k] < N).sum())
    k_uncond = k - k_cond
    if k_uncond > N:
        k_cond, k_uncond = k - N, N
    keep_cond = np.argsort(-d_cond_N, kind="stable")[:k_cond]
    keep_uncond = np.argsort(-d_uncond_N, kind="stable")[:k_uncond]
    return np.sort(np.concatenate((keep_cond, N + keep_uncond))).astype(np.int64)


def random_subset(n: int, k: int, seed: int) -> np.ndarray:
    """The baseline: k of n rows, seeded, sorted."""
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False)).astype(np.int64)


def frechet_to_pool(features_NF: np.ndarray, indices: np.ndarray) -> float:
    """Frechet distance between the selected rows' features and all rows' features."""
    from sasq.metrics import fid

    features_NF = np.asarray(features_NF, np.float64)
    return fid(features_NF[indices], features_NF)


def gaussian_entropy(features_NF: np.ndarray, ridge: float = 1e-6) -> float:
    """Differential entropy (nats) of a Gaussian fit: 0.5 * logdet(2 pi e C); a ridge keeps
    it finite when there are fewer rows than features."""
    x_NF = np.asarray(features_NF, np.float64)
    F = x_NF.shape[1]
    cov_FF = np.atleast_2d(np.cov(x_NF, rowvar=False)) + ridge * np.eye(F)
    return 0.5 * float(np.linalg.slogdet(2 * np.pi * np.e * cov_FF)[1])
