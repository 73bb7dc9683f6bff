"""The decoding loop on the torch backend: KV cache equals the full block-causal forward,
seeds decide tokens, hooks teacher-force."""

from __future__ import annotations

import pytest
import torch
from conftest import random_tiny

from sasq.engines.torch_backend import TorchBackend
from sasq.tools.decode import generate


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
