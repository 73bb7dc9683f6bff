"""FID, Inception Score, PSNR, SQNR and token agreement against closed forms."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from sasq.metrics import fid, inception_score, psnr, sqnr_db, token_agreement


def test_fid_of_a_set_with_itself_is_zero():
    feat = np.random.default_rng(0).normal(size=(500, 16))
    assert fid(feat, feat) < 1e-6


def test_fid_shifted_gaussians_matches_closed_form():
    """Same covariance: FID = ||mu_a - mu_b||^2; exact when b is a shifted copy of a."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 8))
    shift = np.linspace(-1.0, 2.0, 8)
    expected = float(shift @ shift)
    assert fid(a, a + shift) == pytest.approx(expected, rel=1e-2)
    # Independent samples of the same two Gaussians: only sampling noise on top.
    b = rng.normal(size=(20000, 4)) + np.array([1.0, 0.0, -1.0, 0.5])
    c = rng.normal(size=(20000, 4))
    assert fid(b, c) == pytest.approx(2.25, rel=0.05)


def test_fid_scaled_covariance_closed_form():
    """1-D: (mu_a - mu_b)^2 + (s_a - s_b)^2 for Gaussians N(mu, s^2)."""
    z = np.random.default_rng(2).normal(size=(4000, 1))
    z = (z - z.mean()) / z.std(ddof=1)
    assert fid(z, 3.0 * z + 1.0) == pytest.approx(1.0 + 4.0, rel=1e-6)


def test_fid_with_dead_features_is_quiet_and_exact():
    """Constant (dead ReLU) feature columns make both covariances singular."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3000, 6))
    a[:, :2] = 0.0
    shift = np.array([0.0, 0.0, 1.0, -1.0, 0.5, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fid(a, a + shift) == pytest.approx(2.25, rel=1e-6)
        assert fid(a, a) < 1e-6


def test_fid_rejects_bad_shapes():
    with pytest.raises(ValueError):
        fid(np.zeros((10, 3)), np.zeros((10, 4)))


def test_inception_score_extremes():
    k = 10
    one_hot = np.eye(k)[np.arange(100) % k]
    assert inception_score(one_hot) == pytest.approx(k, abs=1e-6)
    same = np.tile(np.array([0.7, 0.2, 0.1]), (50, 1))
    assert inception_score(same) == pytest.approx(1.0, abs=1e-9)
    uniform = np.full((40, k), 1.0 / k)
    assert inception_score(uniform) == pytest.approx(1.0, abs=1e-9)


def test_inception_score_two_classes_half_confident():
    """p(y|x) in {(0.75, 0.25), (0.25, 0.75)} equally often: IS = exp(log 2 - H(0.75))."""
    probs = np.array([[0.75, 0.25], [0.25, 0.75]] * 10)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert inception_score(probs) == pytest.approx(math.exp(math.log(2) - h), rel=1e-12)
    # With 2 splits each chunk is still balanced, so the score does not change.
    assert inception_score(probs, splits=2) == pytest.approx(math.exp(math.log(2) - h))


def test_psnr_known_mse():
    a = torch.zeros(2, 1, 4, 4)
    b = a + 0.125  # MSE = 1/64, exact in float32
    assert psnr(a, b) == pytest.approx(10 * math.log10(4.0 * 64), rel=1e-12)
    assert psnr(a.numpy(), b.numpy(), data_range=1.0) == pytest.approx(20 * math.log10(8))
    half = torch.cat([a[:1], b[1:]])  # half the elements off by 0.125: MSE = 1/128
    assert psnr(a, half) == pytest.approx(10 * math.log10(4.0 * 128), rel=1e-12)
    assert psnr(a, a) == math.inf


def test_sqnr_known_noise_power():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=100_000) * 2.0
    noise = rng.normal(size=100_000) * 0.02
    expected = 10 * math.log10(np.sum(ref**2) / np.sum(noise**2))
    assert sqnr_db(ref, ref + noise) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(40.0, abs=0.1)  # power ratio 4 / 4e-4
    assert sqnr_db(torch.from_numpy(ref), torch.from_numpy(ref)) == math.inf


def test_token_agreement_hand_made():
    a = [np.array([[3]]), np.array([[1, 2], [3, 4]]), torch.arange(9).reshape(3, 3)]
    b = [np.array([[3]]), np.array([[1, 0], [0, 4]]), torch.zeros(3, 3, dtype=torch.long)]
    assert token_agreement(a, b) == [1.0, 0.5, pytest.approx(1 / 9)]
    with pytest.raises(ValueError):
        token_agreement(a, b[:2])
    with pytest.raises(ValueError):
        token_agreement([np.zeros(3)], [np.zeros(4)])


def test_fid_matches_the_matrix_square_root():
    """The eigenvalue form of Tr((C_a C_b)^(1/2)) against scipy's sqrtm."""
    from scipy import linalg

    rng = np.random.default_rng(3)
    a = np.maximum(rng.normal(size=(400, 16)), 0)
    b = np.maximum(rng.normal(size=(400, 16)) * 1.3 + 0.2, 0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    d = a.mean(0) - b.mean(0)
    ref = d @ d + np.trace(ca) + np.trace(cb) - 2 * np.trace(np.real(linalg.sqrtm(ca @ cb)))
    assert fid(a, b) == pytest.approx(ref, rel=1e-9)
