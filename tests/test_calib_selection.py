"""Distribution-guided calibration selection: the conditional/unconditional split, the
released code's degenerate case, the farthest-rows property, and the measures."""

from __future__ import annotations

import numpy as np
import pytest

from sasq.calib.selection import (
    DGCConfig,
    Reference,
    dgc_distances,
    frechet_to_pool,
    gaussian_entropy,
    mahalanobis,
    random_subset,
    select,
)

N, F = 64, 16


@pytest.fixture(scope="module")
def cfg_batch():
    """Conditional rows spread over 10 class clusters; unconditional rows one tight cloud
    (what CFG rollouts look like: the null class makes near-identical features)."""
    rng = np.random.default_rng(0)
    means_CF = rng.normal(0.0, 2.0, (10, F))
    cond_NF = means_CF[rng.integers(0, 10, N)] + rng.normal(0.0, 1.0, (N, F))
    uncond_NF = rng.normal(0.0, 0.3, (N, F))
    return cond_NF, uncond_NF


def test_indices_address_the_cfg_batch(cfg_batch):
    idx = select(*cfg_batch, k=40)
    assert idx.dtype == np.int64 and len(idx) == 40
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 2 * N


def test_pooled_dgc_spends_the_budget_on_the_spread_out_half(cfg_batch):
    idx = select(*cfg_batch, k=N)
    # Measured: all 64 rows kept are conditional (a random subset keeps ~32).
    assert (idx < N).sum() >= 0.75 * N


def test_selection_is_the_k_farthest_rows(cfg_batch):
    d_cond, d_uncond = dgc_distances(*cfg_batch, DGCConfig())
    d_2N = np.concatenate((d_cond, d_uncond))
    idx = select(*cfg_batch, k=50)
    rest = np.setdiff1d(np.arange(2 * N), idx)
    assert d_2N[idx].min() >= d_2N[rest].max()


def test_per_half_reference_follows_the_released_rule(cfg_batch):
    cond, uncond = cfg_batch
    cfg = DGCConfig(reference=Reference.PER_HALF)
    d_cond, d_uncond = dgc_distances(cond, uncond, cfg)
    top = np.argsort(-np.concatenate((d_cond, d_uncond)), kind="stable")[:N]
    assert (select(cond, uncond, N, cfg) < N).sum() == (top < N).sum()


def test_released_pinv_distances_are_all_equal_when_features_outnumber_rows():
    # The released code (pinv, each half to itself) with F >= N - 1: every distance is
    # (N - 1) / sqrt(N), so its allclose branch splits half and half whatever the data.
    rng = np.random.default_rng(1)
    cond, uncond = rng.normal(0, 5, (N, 80)), rng.normal(0, 0.1, (N, 80))
    assert np.allclose(mahalanobis(cond, cond, shrinkage=0.0), (N - 1) / np.sqrt(N))
    idx = select(cond, uncond, 40, DGCConfig(reference=Reference.PER_HALF, shrinkage=0.0))
    assert (idx < N).sum() == 20
    # The shrunk pooled distance still sees that the conditional half is the spread one.
    assert (select(cond, uncond, 40) < N).sum() == 40


def test_mahalanobis_of_a_standard_gaussian_matches_the_euclidean_norm():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((200_000, 3))
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    assert np.allclose(mahalanobis(x, ref, shrinkage=0.0), [0.0, 3.0], atol=0.02)


def test_measures_what_the_selection_changes(cfg_batch):
    pool = np.concatenate(cfg_batch)
    dgc = select(*cfg_batch, k=N)
    randoms = [random_subset(2 * N, N, seed) for seed in range(5)]
    # DGC keeps the rows that add the most spread: higher Gaussian entropy than any of five
    # seeded random subsets (measured 28.8 nats against 22.6..24.0).
    assert gaussian_entropy(pool[dgc]) > max(gaussian_entropy(pool[r]) for r in randoms)
    # and, by design, departs from the pooled CFG distribution: Frechet distance to the
    # pool 7.5 against 1.2..1.6 for random subsets (the trade DGC makes; reported).
    fd_dgc = frechet_to_pool(pool, dgc)
    fd_random = [frechet_to_pool(pool, r) for r in randoms]
    assert fd_dgc > max(fd_random)
    assert frechet_to_pool(pool, np.arange(2 * N)) == pytest.approx(0.0, abs=1e-6)


def test_bad_arguments():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="k must be"):
        select(x, x, 9)
    with pytest.raises(ValueError, match="same rows"):
        select(x, x[:3], 2)
