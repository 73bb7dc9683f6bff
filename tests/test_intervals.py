"""Bootstrap intervals: coverage of a known mean, paired differences across rows."""

from __future__ import annotations

import numpy as np
import pytest

from sasq.tools.intervals import (
    SampleScores,
    difference,
    difference_dicts,
    draws,
    intervals,
    metric_fns,
    replicates,
)


def _scores(agreement: np.ndarray, feats: np.ndarray) -> SampleScores:
    n = len(agreement)
    probs = np.full((n, 10), 0.01)
    probs[np.arange(n), np.arange(n) % 10] = 0.91
    return SampleScores(probs, feats, np.ones(n, bool), agreement)


def test_interval_of_a_mean_matches_the_normal_theory():
    rng = np.random.default_rng(1)
    n = 2000
    a = _scores(rng.normal(0.5, 0.2, n), rng.normal(size=(n, 4)))
    fns = metric_fns(a.feats, rng.normal(size=(500, 4)))
    iv = intervals(replicates(fns, a, draws(n, 1000, 0)))["token_agreement"]
    assert iv.lo < iv.value < iv.hi
    assert iv.half_width == pytest.approx(1.96 * 0.2 / np.sqrt(n), rel=0.15)


def test_paired_difference_is_tight_where_two_rows_move_together():
    """Two rows whose samples differ by 0.01 each but vary by 0.2 across samples: separate
    intervals overlap, the paired difference is +0.01 and significant."""
    rng = np.random.default_rng(2)
    n = 500
    base = rng.normal(0.5, 0.2, n)
    feats = rng.normal(size=(n, 4))
    fns = metric_fns(feats, rng.normal(size=(500, 4)))
    idx = draws(n, 500, 0)
    ra = replicates(fns, _scores(base + 0.01, feats), idx)
    rb = replicates(fns, _scores(base, feats), idx)
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


def test_draws_refuse_too_few_samples():
    with pytest.raises(ValueError, match="n >= 2"):
        draws(1, 10, 0)
