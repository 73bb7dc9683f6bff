"""The paper-faithful fake-quant reference: its quantizers, and closeness to FP at W8A8."""

from __future__ import annotations

import pytest
import torch

from sasq.engines.backends import make_backend
from sasq.engines.paper_quant import (
    PaperQuantBackend,
    PaperQuantConfig,
    log2_quant,
    per_token,
    shift_sum_v,
)
from sasq.models import load_model
from sasq.tools.quality.compare import compare_backends
from sasq.tools.quality.config import CompareConfig


def test_log2_softmax_levels():
    p = torch.tensor([1.0, 0.5, 0.3, 0.25, 1e-5])
    # 4 bits: k = round(-log2 p) in 0..14; 1e-5 needs k = 17 and flushes to zero
    assert torch.equal(log2_quant(p, 4), torch.tensor([1.0, 0.5, 0.25, 0.25, 0.0]))
    assert log2_quant(torch.tensor([2.0**-14]), 4).item() == 2.0**-14


def test_per_token_scales_are_per_row():
    x = torch.tensor([[1.0, -0.5], [100.0, 3.0]])
    q = per_token(x, 8)
    assert torch.allclose(q[0], x[0], atol=1 / 127 / 2 + 1e-7)  # row 0's own fine grid
    assert q[1, 0] == 100.0


def test_shift_sum_v_error_halves_with_two_copies():
    g = torch.Generator().manual_seed(0)
    v = torch.rand(1, 1, 4096, 8, generator=g) * 2 - 1
    err = {}
    for n in (1, 2, 4):
        vq = shift_sum_v(v, torch.full((1, 1, 4096), n), 8)
        err[n] = (vq - v).pow(2).mean().sqrt().item()
    assert 0.45 <= err[2] / err[1] <= 0.55
    assert err[4] < 0.6 * err[2]


def _logit_sqnr(m, qc: PaperQuantConfig) -> list[float]:
    from sasq.engines.decode import generate
    from sasq.metrics import sqnr_db

    labels, pns, samp = torch.arange(16) % 10, m.cfg.var.patch_nums, m.cfg.sampling
    fp = generate(make_backend("torch", m), labels, pns, samp, 0, 10, keep_logits=True)
    q = generate(
        PaperQuantBackend(m, qc),
        labels,
        pns,
        samp,
        0,
        10,
        keep_logits=True,
        hook=lambda si, idx, logits: fp.idx[si],
    )  # same inputs at every scale
    return [sqnr_db(a, b) for a, b in zip(fp.logits, q.logits, strict=True)]


@pytest.mark.slow  # 19s on a busy 2-core machine
def test_w8a8_reference_logit_sqnr_and_the_cost_of_log2_softmax():
    # Measured on the embedded default: 48.6 / 30.7 / 26.2 / 23.4 dB per scale with log2
    # softmax, 48.6 / 45.1 / 43.1 / 37.3 dB with uniform 1/127 probabilities.
    m = load_model()
    log2 = _logit_sqnr(m, PaperQuantConfig())
    uniform = _logit_sqnr(m, PaperQuantConfig(log2_softmax=False))
    assert min(log2) >= 20.0, log2
    assert min(uniform) >= 33.0, uniform
    assert uniform[-1] >= log2[-1] + 8.0


@pytest.mark.slow  # 19s on a busy 2-core machine
def test_reference_buys_shifted_copies_under_the_budget():
    m = load_model()
    ref = PaperQuantBackend(m, PaperQuantConfig())
    r = compare_backends(m.cfg, make_backend("torch", m), ref, CompareConfig(n=8, atol=10))
    assert r["token_agreement_free_running"][0] >= 0.9
    assert 0 < max(ref.extra_copies) <= 16  # cap at C=128: 0.01 * (12*128 + 2*S) keys
