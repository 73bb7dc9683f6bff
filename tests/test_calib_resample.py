"""Codebook resampling: largest-remainder targets, the histogram moved onto the mean
prediction, only excess tokens redrawn, determinism, and the decoding-loop hook."""

from __future__ import annotations

import pytest
import torch

import sasq.models as M
from sasq.calib.resample import (
    ResampleHook,
    largest_remainder,
    resample_scale,
    target_counts,
    tv_distance,
)
from sasq.engines.decode import generate
from sasq.engines.torch_backend import TorchBackend
from sasq.models.config import SamplingConfig
from sasq.models.sampling import filter_logits
from sasq.quant.settings import ResampleMode


def _peaked(seed: int, N: int = 512, V: int = 64, top_k: int = 0):
    """Per-token probabilities around a peaked shared shape, and one sample from each."""
    g = torch.Generator().manual_seed(seed)
    logits_NV = -0.15 * torch.arange(V, dtype=torch.float64) + torch.randn(
        N, V, generator=g, dtype=torch.float64
    )
    probs_NV = filter_logits(logits_NV, top_k=top_k).softmax(-1)
    idx_N = torch.multinomial(probs_NV, 1, generator=g).flatten()
    return idx_N, probs_NV


@pytest.mark.parametrize("seed", range(5))
def test_largest_remainder_sums_exactly_and_stays_within_one(seed):
    g = torch.Generator().manual_seed(seed)
    N = 997
    w_V = torch.rand(50, generator=g, dtype=torch.float64) ** 4  # uneven, some near 0
    real_V = w_V / w_V.sum() * N
    counts_V = largest_remainder(real_V, N)
    assert int(counts_V.sum()) == N
    assert ((counts_V.double() - real_V.double()).abs() < 1).all()
    assert (counts_V >= 0).all()


def test_largest_remainder_breaks_ties_by_lowest_index():
    # 2/3 each, total 2: the two first entries round up.
    assert largest_remainder(torch.full((3,), 2 / 3), 2).tolist() == [1, 1, 0]
    assert largest_remainder(torch.tensor([2.5, 1.5, 1.0]), 5).tolist() == [3, 1, 1]


def test_target_counts_are_mean_probability_times_n():
    probs_NV = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4], [1.0, 0, 0]])
    # mean (0.475, 0.275, 0.25) * 4 = (1.9, 1.1, 1.0)
    assert target_counts(probs_NV).tolist() == [2, 1, 1]


@pytest.mark.parametrize("seed", range(3))
def test_resampling_puts_counts_on_targets_and_cuts_tv(seed):
    idx_N, probs_NV = _peaked(seed)
    new_N = resample_scale(idx_N, probs_NV, torch.Generator().manual_seed(0))
    target_V = target_counts(probs_NV)
    # Full support: every deficit has room, so every count lands on its target ...
    assert torch.equal(torch.bincount(new_N, minlength=64), target_V)
    before, after = tv_distance(idx_N, probs_NV), tv_distance(new_N, probs_NV)
    # ... and what is left of the TV is the rounding of the targets (measured: before ~0.08,
    # after ~0.012 for N = 512 tokens over 64 entries).
    assert before > 0.05
    assert after <= 0.25 * before
    assert after == pytest.approx(0.5 * float((target_V / 512 - probs_NV.mean(0)).abs().sum()))


def test_only_excess_tokens_of_over_sampled_entries_are_redrawn():
    idx_N, probs_NV = _peaked(1)
    count_V = torch.bincount(idx_N, minlength=64)
    excess_V = (count_V - target_counts(probs_NV)).clamp_min(0)
    new_N = resample_scale(idx_N, probs_NV, torch.Generator().manual_seed(0))
    changed = new_N != idx_N
    assert changed.any()
    # Tokens of under-sampled and exactly-sampled entries never move.
    assert (excess_V[idx_N[changed]] > 0).all()
    assert torch.equal(new_N[excess_V[idx_N] == 0], idx_N[excess_V[idx_N] == 0])
    # Exactly the excess of each over-sampled entry moved (all deficits had room).
    moved_V = torch.bincount(idx_N[changed], minlength=64)
    assert torch.equal(moved_V, excess_V)


def test_restricted_support_never_moves_a_token_outside_it():
    # top-k = 8 per token: a token can only go where its own filtered probability is > 0.
    idx_N, probs_NV = _peaked(2, top_k=8)
    new_N = resample_scale(idx_N, probs_NV, torch.Generator().manual_seed(0))
    assert (probs_NV.gather(1, new_N[:, None]) > 0).all()
    target_V = target_counts(probs_NV)
    count_V, new_count_V = torch.bincount(idx_N, minlength=64), torch.bincount(new_N, minlength=64)
    # Receivers never overshoot their targets, donors never fall below theirs.
    grew, shrank = new_count_V > count_V, new_count_V < count_V
    assert (new_count_V[grew] <= target_V[grew]).all()
    assert (new_count_V[shrank] >= target_V[shrank]).all()
    assert tv_distance(new_N, probs_NV) < tv_distance(idx_N, probs_NV)


def test_deterministic_under_the_generator():
    idx_N, probs_NV = _peaked(3)
    a = resample_scale(idx_N, probs_NV, torch.Generator().manual_seed(5))
    b = resample_scale(idx_N, probs_NV, torch.Generator().manual_seed(5))
    c = resample_scale(idx_N, probs_NV, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _mixed_logits(seed: int, B: int = 4, l: int = 16, V: int = 32):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(B, l, V, generator=g) - 0.1 * torch.arange(V)


def test_hook_mode_none_is_identity_and_records_tv():
    logits_BlV = _mixed_logits(0)
    idx_Bl = torch.randint(0, 32, (4, 16), generator=torch.Generator().manual_seed(1))
    hook = ResampleHook(SamplingConfig(cfg=1.0), ResampleMode.NONE, seed=0)
    out = hook(0, idx_Bl, logits_BlV)
    assert torch.equal(out, idx_Bl)
    (r,) = hook.records
    assert (r.si, r.n_tokens, r.changed) == (0, 64, 0)
    assert (
        r.tv_before
        == r.tv_after
        == pytest.approx(tv_distance(idx_Bl.flatten(), logits_BlV.softmax(-1).reshape(-1, 32)))
    )


def test_hook_resamples_the_whole_batch_jointly_on_filtered_probabilities():
    logits_BlV = _mixed_logits(2)
    sampling = SamplingConfig(cfg=1.0, top_k=10, top_p=0.0)
    probs_NV = filter_logits(logits_BlV, top_k=10).softmax(-1).reshape(-1, 32)
    idx_Bl = torch.multinomial(probs_NV, 1, generator=torch.Generator().manual_seed(3)).view(4, 16)
    hook = ResampleHook(sampling, "ours", seed=0)
    out = hook(1, idx_Bl, logits_BlV)
    assert out.shape == idx_Bl.shape and out.dtype == idx_Bl.dtype
    expected = resample_scale(idx_Bl.flatten(), probs_NV, torch.Generator().manual_seed(0))
    assert torch.equal(out.flatten(), expected)
    (r,) = hook.records
    assert r.n_tokens == 64 and r.changed == int((out != idx_Bl).sum()) > 0
    assert r.tv_after < r.tv_before
    assert hook.tv_by_scale() == {1: (r.tv_before, r.tv_after)}


def test_hook_plugs_into_the_decoding_loop(tiny_model_dir):
    m = M.load_model(tiny_model_dir)  # conftest's random tiny model with widened gates
    hook = ResampleHook(m.cfg.sampling, ResampleMode.OURS, seed=0)
    labels = torch.arange(8)
    args = (m.var.patch_nums, m.cfg.sampling, 0, m.var.num_classes)
    g = generate(TorchBackend(m), labels, *args, hook=hook)
    plain = generate(TorchBackend(m), labels, *args)
    assert [r.si for r in hook.records] == list(range(len(m.var.patch_nums)))
    assert [r.n_tokens for r in hook.records] == [8 * pn * pn for pn in m.var.patch_nums]
    # The resampled maps are what the loop kept (teacher forcing), and they differ from plain.
    assert sum(r.changed for r in hook.records) > 0
    assert not all(torch.equal(a, b) for a, b in zip(g.idx, plain.idx, strict=True))
    # Per move TV can tick up by a rounding remainder; over the rollout it must go down.
    assert sum(r.tv_after for r in hook.records) < sum(r.tv_before for r in hook.records)
