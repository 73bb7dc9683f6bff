"""Top-k, top-p, CFG mixing and its ramp, and the sampler's frequencies."""

from __future__ import annotations

import math

import pytest
import torch

from sasq.models.sampling import cfg_mix, cfg_ramp, filter_logits, sample, smooth_weights

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
LOGITS = PROBS.log().view(1, 1, 4)


def _kept(logits: torch.Tensor) -> set[int]:
    return set(torch.isfinite(logits.flatten()).nonzero().flatten().tolist())


@pytest.mark.parametrize("k,expected", [(1, {0}), (2, {0, 1}), (3, {0, 1, 2}), (0, {0, 1, 2, 3})])
def test_top_k_keeps_the_k_most_likely(k, expected):
    assert _kept(filter_logits(LOGITS, top_k=k)) == expected


@pytest.mark.parametrize(
    "p,expected", [(0.5, {0}), (0.8, {0, 1}), (0.85, {0, 1, 2}), (0.99, {0, 1, 2, 3})]
)
def test_top_p_keeps_the_smallest_nucleus(p, expected):
    # Tokens whose ascending cumulative probability is <= 1 - p are dropped (VAR's rule).
    assert _kept(filter_logits(LOGITS, top_p=p)) == expected


def test_filtered_sampling_matches_renormalised_probabilities():
    g = torch.Generator().manual_seed(0)
    logits = LOGITS.expand(1, 20000, 4)
    idx = sample(logits, top_k=3, top_p=0.0, generator=g)
    freq = torch.bincount(idx.flatten(), minlength=4).float() / idx.numel()
    target = torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95
    assert freq[3] == 0
    assert torch.allclose(freq, target, atol=0.015), freq


def test_cfg_mix_and_ramp():
    cond = torch.full((2, 3, 5), 2.0)
    uncond = torch.full((2, 3, 5), 0.5)
    mixed = cfg_mix(torch.cat((cond, uncond)), t=1.5)
    assert torch.allclose(mixed, torch.full((2, 3, 5), 2.5 * 2.0 - 1.5 * 0.5))
    assert [cfg_ramp(3.0, si, 4) for si in range(4)] == [0.0, 1.0, 2.0, 3.0]
    assert math.isclose(cfg_ramp(2.0, 0, 1), 2.0)


def test_cfg_zero_is_the_conditional_logits():
    x = torch.randn(4, 2, 7)
    assert torch.equal(cfg_mix(x, 0.0), x[:2])


@pytest.mark.parametrize(
    "si,SN,tau", [(0, 10, 0.27), (9, 10, 0.0135), (5, 6, 0.0135), (0, 1, 0.0135)]
)
def test_smooth_weights_are_the_official_gumbel_softmax(si, SN, tau):
    g = torch.Generator().manual_seed(3)
    logits = filter_logits(torch.randn(2, 5, 64, generator=g) * 3, top_k=20, top_p=0.0)
    got = smooth_weights(logits, si, SN, torch.Generator().manual_seed(11))
    # official: gumbel_softmax_with_rng(logits * (1 + r), tau), Gumbel noise -log(Exp(1))
    r = si / (SN - 1) if SN > 1 else 1.0
    e = torch.empty(2, 5, 64).exponential_(generator=torch.Generator().manual_seed(11))
    ref = ((logits * (1 + r) - e.log()) / tau).softmax(-1)
    assert torch.equal(got, ref)
    assert torch.equal(got[~torch.isfinite(logits)], torch.zeros_like(got[~torch.isfinite(logits)]))
    assert torch.allclose(got.sum(-1), torch.ones(2, 5), atol=1e-6)
