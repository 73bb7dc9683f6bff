"""Half-sampling intervals: they hold their value, cover a known truth at 95%, pair rows.

Coverage is estimated over T independent simulated evaluations, so it is itself a binomial
proportion: its spread is sqrt(p (1 - p) / T), and the tolerances below are three of those
(a 0.3% chance per seed of failing a correct method), computed, not tuned on one machine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sasq.metrics import frechet_distance
from sasq.tools.quality.intervals import (
    Interval,
    SampleScores,
    difference,
    difference_dicts,
    draws,
    interval,
    intervals,
    metric_fns,
    replicates,
)


def _scores(agreement: np.ndarray, feats: np.ndarray, probs=None) -> SampleScores:
    n = len(agreement)
    if probs is None:
        probs = np.full((n, 10), 0.01)
        probs[np.arange(n), np.arange(n) % 10] = 0.91
    return SampleScores(probs, feats, np.arange(n) % 7 != 0, agreement)


def _fd_batch(x_RnD: np.ndarray, sd_D: np.ndarray) -> np.ndarray:
    """FID of each of R sample sets against N(0, diag(sd^2)) real moments, vectorised
    (``frechet_distance``'s formula; the test below checks they agree)."""
    mu_RD = x_RnD.mean(1)
    xc = x_RnD - mu_RD[:, None]
    cov_RDD = xc.transpose(0, 2, 1) @ xc / (x_RnD.shape[1] - 1)
    eig = np.linalg.eigvals(cov_RDD * (sd_D**2)[None, None, :])
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum(-1)
    return (mu_RD**2).sum(-1) + np.trace(cov_RDD, axis1=1, axis2=2) + (sd_D**2).sum() - 2 * tr_sqrt


def test_every_interval_contains_its_value_where_the_bootstrap_misses():
    """The issue's case: 50 samples of 16-dim features. Resampling with replacement puts the
    FID percentile interval above the value and the IS one below it; half-sampling's
    intervals hold every value, and every paired difference's too."""
    rng = np.random.default_rng(3)
    n, F = 50, 16
    feats = rng.normal(size=(n, F))
    # A confident classifier, as the digits one: IS is then mostly the class marginal's
    # entropy, which duplicated images bias down.
    logits = 8 * np.eye(10)[np.arange(n) % 10] + 0.5 * rng.normal(size=(n, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    fns = metric_fns(feats, rng.normal(size=(500, F)))
    hs = draws(n, 400, 0)
    ra = replicates(fns, _scores(rng.uniform(size=n), feats, probs), hs)
    noisy = feats + 0.3 * rng.normal(size=(n, F))
    rb = replicates(fns, _scores(rng.uniform(size=n), noisy, probs[::-1].copy()), hs)
    for r in (ra, rb):
        for m, iv in intervals(r).items():
            assert iv.lo <= iv.value <= iv.hi, (m, iv)
    for m, iv in difference(rb, ra).items():
        assert iv.lo <= iv.value <= iv.hi, (m, iv)
    assert intervals(rb)["FID2FP"].hi - intervals(rb)["FID2FP"].lo > 0.1  # not degenerate

    # The old method on the same samples: 400 draws of n with replacement, percentiles.
    boot = rng.integers(0, n, size=(400, n))
    s = _scores(np.zeros(n), feats, probs)
    old = {m: np.quantile([fns[m](s, i) for i in boot], [0.025, 0.975]) for m in ("FID", "IS")}
    every = np.arange(n)
    assert old["FID"][0] > fns["FID"](s, every)  # the bootstrap's interval misses, above
    assert old["IS"][1] < fns["IS"](s, every)  # and below


@pytest.mark.parametrize("stat", ["one row", "paired difference"])
def test_coverage_of_a_known_frechet_distance(stat):
    """Generated features N(mu, diag(sd^2)) against real moments N(0, diag(sd_r^2)) held
    fixed (as eval holds the real digits fixed): the Fréchet distance is known exactly,
    |mu|^2 + sum (sd - sd_r)^2. A second row, the same samples scaled and shifted (the
    pairing), has a known distance too, and so has the difference.

    n = 400, 4 dims: the estimator's O(1/n) bias is 0.2 of its spread (20,000 simulated
    draws: E FID_400 = 1.259 against 1.240, sd 0.097), which lowers the coverage of the
    true distance to Phi(1.96 - 0.2) - Phi(-1.96 - 0.2) = 0.945 (in the difference the
    two rows' biases cancel to 0.01 of its spread: 0.95). B = 200 half-samples, for speed,
    put the 2.5% quantiles a little inward: one point of coverage (on the same 600
    simulated evaluations, 0.963 with 1000 draws, 0.952 with 200). The tolerance is three
    binomial standard errors of T = 300 trials around the coverage so expected."""
    n, D, T, B = 400, 4, 300, 200
    sd_r = np.ones(D)
    sd_a, mu_a = np.linspace(0.6, 1.2, D), np.full(D, 0.5)
    scale, shift = np.linspace(1.1, 0.9, D), np.full(D, -0.2)
    sd_b, mu_b = sd_a * scale, mu_a * scale + shift

    def truth(mu, sd):
        return float(mu @ mu + ((sd - sd_r) ** 2).sum())

    want = truth(mu_a, sd_a) - (truth(mu_b, sd_b) if stat != "one row" else 0.0)
    rng = np.random.default_rng(7)
    hits = 0
    for t in range(T):
        a_nD = mu_a + sd_a * rng.normal(size=(n, D))
        hs = draws(n, B, seed=t)
        sets = [a_nD] if stat == "one row" else [a_nD, a_nD * scale + shift]
        vals = [_fd_batch(x[None], sd_r)[0] for x in sets]
        devs = [hs.rate * (_fd_batch(x[hs.idx], sd_r) - v) for x, v in zip(sets, vals, strict=True)]
        if stat == "one row":
            iv = interval(vals[0], devs[0])
        else:
            iv = interval(vals[0] - vals[1], devs[0] - devs[1])
        assert iv.lo <= iv.value <= iv.hi
        hits += iv.lo <= want <= iv.hi
    p0 = (0.945 if stat == "one row" else 0.95) - 0.01
    tol = 3 * math.sqrt(p0 * (1 - p0) / T)
    assert abs(hits / T - p0) <= tol, (hits / T, p0, tol)
    # The vectorised FID is frechet_distance's: same number on one set.
    x = mu_a + sd_a * rng.normal(size=(n, D))
    direct = frechet_distance(x.mean(0), np.cov(x, rowvar=False), np.zeros(D), np.diag(sd_r**2))
    assert _fd_batch(x[None], sd_r)[0] == pytest.approx(direct, rel=1e-9)


def test_fixed_class_counts_are_kept_by_stratified_half_samples():
    """eval generates 200 images of each of two classes, far apart in feature space: every
    draw of its samples has those counts. Half-samples that keep them (strata) give the
    FID's spread over 4,000 simulated evaluations (error of that reference: 1/sqrt(8000),
    1%) and cover its mean as the binomial allows (B = 200: 0.94, as above); half-samples
    that ignore the classes vary the counts, a variance the number never has, and come
    out twice as wide (2.1 measured; asserted: beyond 1.5)."""
    n, D, T, B = 400, 2, 300, 200
    labels = np.repeat([0, 1], n // 2)
    mean_by_class = np.array([[-1.5, 0.0], [1.5, 0.0]])
    sd_r = np.array([np.sqrt(1.5**2 + 0.5), np.sqrt(0.8)])  # the real set's moments, fixed
    shift_r = np.array([0.3, 0.0])
    rng = np.random.default_rng(11)

    def evaluations(R: int) -> np.ndarray:
        return mean_by_class[labels] - shift_r + np.sqrt(0.5) * rng.normal(size=(R, n, D))

    ref = _fd_batch(evaluations(4000), sd_r)
    expected, spread = ref.mean(), ref.std()
    hits, widths = 0, {"strata": [], "none": []}
    for t in range(T):
        x = evaluations(1)[0]
        v = _fd_batch(x[None], sd_r)[0]
        for kind, strata in (("strata", labels), ("none", None)):
            hs = draws(n, B, seed=t, strata=strata)
            iv = interval(v, hs.rate * (_fd_batch(x[hs.idx], sd_r) - v))
            widths[kind].append(iv.hi - iv.lo)
            hits += kind == "strata" and iv.lo <= expected <= iv.hi
    assert abs(hits / T - 0.94) <= 3 * math.sqrt(0.94 * 0.06 / T)
    assert np.mean(widths["strata"]) == pytest.approx(2 * 1.96 * spread, rel=0.1)
    assert np.mean(widths["none"]) > 1.5 * np.mean(widths["strata"])
    hs = draws(n, 10, 0, strata=labels)
    assert all(np.bincount(labels[row]).tolist() == [100, 100] for row in hs.idx)


def test_one_differing_image_is_never_a_significant_difference():
    """Two rows that classify 499 of 500 images alike: the paired accuracy difference is
    0.002, and whether a half-sample holds the one differing image is a coin toss, so its
    deviations are +-0.002 and the interval [0, 0.004] touches 0, whatever the draws (a
    mean is not biased by half-sampling: its deviations are not re-centred on the draws'
    imbalance, which once made such a difference "exclude 0")."""
    n = 500
    labels = np.repeat(np.arange(10), 50)
    a, b = np.ones(n, bool), np.ones(n, bool)
    b[123] = False
    fns = {"class_acc": lambda s, i: float(s.correct[i].mean())}
    for seed in range(20):
        hs = draws(n, 1000, seed, strata=labels)
        ra = replicates(fns, SampleScores(np.zeros((n, 1)), np.zeros((n, 1)), a, a), hs)
        rb = replicates(fns, SampleScores(np.zeros((n, 1)), np.zeros((n, 1)), b, a), hs)
        d = difference(ra, rb)["class_acc"]
        assert d.value == pytest.approx(0.002) and not d.excludes(0.0), (seed, d)
    # Round-off: -2/300 minus its own deviation ends 1e-16 below 0 (digits32's evidence).
    assert not Interval(-2 / 300, -0.013333333333333334, -1.1102230246251565e-16).excludes(0.0)
    assert Interval(0.01, 0.001, 0.02).excludes(0.0)


def test_interval_of_a_mean_matches_the_normal_theory():
    rng = np.random.default_rng(1)
    n = 2000
    a = _scores(rng.normal(0.5, 0.2, n), rng.normal(size=(n, 4)))
    fns = metric_fns(a.feats, rng.normal(size=(500, 4)))
    iv = intervals(replicates(fns, a, draws(n, 1000, 0)))["token_agreement"]
    assert iv.lo < iv.value < iv.hi
    # 1000 draws estimate a 2.5% quantile to ~7% of the half-width: 15% is two of those.
    assert iv.half_width == pytest.approx(1.96 * 0.2 / np.sqrt(n), rel=0.15)


def test_paired_difference_is_tight_where_two_rows_move_together():
    """Two rows whose samples differ by 0.01 each but vary by 0.2 across samples: separate
    intervals overlap, the paired difference is +0.01 and significant."""
    rng = np.random.default_rng(2)
    n = 500
    base = rng.normal(0.5, 0.2, n)
    feats = rng.normal(size=(n, 4))
    fns = metric_fns(feats, rng.normal(size=(500, 4)))
    hs = draws(n, 500, 0)
    ra = replicates(fns, _scores(base + 0.01, feats), hs)
    rb = replicates(fns, _scores(base, feats), hs)
    ia, ib = intervals(ra)["token_agreement"], intervals(rb)["token_agreement"]
    assert ia.lo < ib.hi  # separately, the rows look alike
    d = difference(ra, rb)
    assert d["token_agreement"].value == pytest.approx(0.01)
    assert d["token_agreement"].excludes(0.0)
    # The same samples: FID2FP of a row against itself is 0 on every draw.
    assert d["FID2FP"].value == 0.0 and not d["FID2FP"].excludes(0.0)
    as_json = difference_dicts(ra, rb)  # what eval.json and sweep.json record
    assert as_json["token_agreement"]["significant"] is True
    assert as_json["FID2FP"]["significant"] is False
    assert as_json["token_agreement"]["value"] == pytest.approx(0.01)


def test_half_samples_are_distinct_and_the_same_for_every_row():
    hs = draws(11, 50, 4)
    assert hs.idx.shape == (50, 5) and hs.rate == pytest.approx(math.sqrt(5 / 6))
    assert all(len(set(row)) == 5 for row in hs.idx.tolist())  # no duplicated sample
    assert np.array_equal(draws(11, 50, 4).idx, hs.idx)
    # A constant statistic has a zero-width interval at its value.
    assert interval(1.0, np.zeros(50)).as_dict() == {"value": 1.0, "lo": 1.0, "hi": 1.0}


def test_intervals_stay_in_the_range_of_their_metric():
    """An accuracy of 0.998 (one miss in 500): half-samples hold the miss or not, so the
    deviations are +-0.002 and the interval is [0.996, 1.000] up to the draws' imbalance;
    wider deviations would reflect past 1 and are cut there. FID is cut at 0 only where
    the reflection reaches it, and a difference (no range) is never cut."""
    n = 500
    correct = np.ones(n, bool)
    correct[7] = False
    s = SampleScores(np.full((n, 10), 0.1), np.zeros((n, 2)), correct, np.ones(n))
    fns = {"class_acc": lambda s, i: float(s.correct[i].mean())}
    iv = intervals(replicates(fns, s, draws(n, 200, 0)))["class_acc"]
    # 200 draws: the share holding the miss is 0.5 +- 0.035, which moves both ends by
    # 0.004 * that: three of those is 0.0005.
    assert iv.value == 0.998 and iv.lo <= 0.998 <= iv.hi <= 1.0
    assert iv.lo == pytest.approx(0.996, abs=5e-4) and iv.hi == pytest.approx(1.0, abs=5e-4)
    wide = np.repeat([-0.004, 0.004], 100)
    assert intervals({"class_acc": (0.998, wide)})["class_acc"].hi == 1.0
    dev = np.linspace(-1.0, 1.0, 201)
    assert intervals({"FID": (0.5, dev)})["FID"].lo == 0.0
    assert intervals({"FID": (5.0, dev)})["FID"].lo == pytest.approx(5.0 - 0.95)
    assert interval(0.5, dev).lo == pytest.approx(0.5 - 0.95)  # q97.5 of dev: 0.95


def test_draws_refuse_too_few_samples():
    with pytest.raises(ValueError, match="n >= 4"):
        draws(3, 10, 0)
    with pytest.raises(ValueError, match="3 samples, half-samples drawn for 8"):
        replicates({}, _scores(np.zeros(3), np.zeros((3, 2))), draws(8, 10, 0))
