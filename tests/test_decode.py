"""The decoding loop on the torch backend: KV cache equals the full block-causal forward,
seeds decide tokens, hooks teacher-force, more_smooth draws as the official loop."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import random_tiny

from sasq.engines.decode import generate
from sasq.engines.torch_backend import TorchBackend
from sasq.models.sampling import cfg_mix, cfg_ramp, filter_logits, sample_filtered, smooth_weights


@pytest.fixture(scope="module")
def model():
    return random_tiny()


def _gen(model, seed, labels=(0, 1, 2, 3, 4, 5, 6, 7), **kw):
    return generate(
        TorchBackend(model),
        torch.tensor(labels),
        model.var.patch_nums,
        model.cfg.sampling,
        seed,
        model.var.num_classes,
        **kw,
    )


def test_kv_cache_decoding_equals_full_block_causal_forward(model):
    g = _gen(model, 0, keep_logits=True)
    labels_2B = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] + [10] * 8)
    inp = model.vqvae.quantize.idx_to_var_input(g.idx).repeat(2, 1, 1)
    with torch.no_grad():
        full = model.var(labels_2B, inp)
    stepwise = torch.cat(g.logits, dim=1)
    assert full.abs().max() > 0.1  # a meaningful comparison, not of zeros
    assert (full - stepwise).abs().max().item() <= 1e-5


def test_same_seed_same_tokens_other_seed_other_tokens(model):
    a, b, c = _gen(model, 7), _gen(model, 7), _gen(model, 8)
    assert all(torch.equal(x, y) for x, y in zip(a.idx, b.idx, strict=True))
    assert torch.equal(a.img, b.img)
    assert not all(torch.equal(x, y) for x, y in zip(a.idx, c.idx, strict=True))


def test_hook_teacher_forces_tokens(model):
    forced = [torch.full((8, pn * pn), 3) for pn in model.cfg.vqvae.patch_nums]
    g = _gen(model, 0, hook=lambda si, idx, logits: forced[si])
    assert all(torch.equal(x, y) for x, y in zip(g.idx, forced, strict=True))
    expected = model.vqvae.idx_to_img(forced)
    assert torch.allclose(g.img, expected, atol=1e-6)


class _Recording(TorchBackend):
    def __init__(self, model):
        super().__init__(model)
        self.soft: list[torch.Tensor | None] = []

    def advance(self, si, idx_Bl, soft_BlV=None):
        self.soft.append(soft_BlV)
        super().advance(si, idx_Bl, soft_BlV)


def test_more_smooth_draws_its_weights_after_the_tokens_from_the_one_generator(model):
    smooth = dataclasses.replace(model.cfg.sampling, more_smooth=True, top_k=50)
    be = _Recording(model)
    labels = torch.tensor([0, 1, 2, 3])
    g = generate(be, labels, model.var.patch_nums, smooth, 4, 10, keep_logits=True)
    gen, SN = torch.Generator().manual_seed(4), len(model.var.patch_nums)
    for si, logits in enumerate(g.logits):  # replay: tokens, then the Gumbel draw
        filtered = filter_logits(cfg_mix(logits, cfg_ramp(smooth.cfg, si, SN)), 50, 0.0)
        assert torch.equal(sample_filtered(filtered, gen), g.idx[si])
        assert torch.equal(smooth_weights(filtered, si, SN, gen), be.soft[si])
    assert be.soft[0].max(-1).values.mean() < 0.9  # soft at the first scale, not one-hot


def test_more_smooth_enters_hook_forced_tokens_exactly(model):
    smooth = dataclasses.replace(model.cfg.sampling, more_smooth=True)
    forced = [torch.full((4, pn * pn), 3) for pn in model.cfg.vqvae.patch_nums]
    be = _Recording(model)
    hook = lambda si, idx, logits: forced[si]  # noqa: E731
    g = generate(be, torch.tensor([0, 1, 2, 3]), model.var.patch_nums, smooth, 0, 10, hook=hook)
    for s, f in zip(be.soft, forced, strict=True):  # one-hot rows of the forced tokens
        assert torch.equal(s.argmax(-1), f) and bool((s.max(-1).values == 1).all())
    assert torch.allclose(g.img, model.vqvae.idx_to_img(forced), atol=1e-6)
