"""Attention concentration: shares between the uniform floor and 1, observers removed."""

from __future__ import annotations

import numpy as np
import pytest

from sasq.models import load_model
from sasq.tools.quality.attention_stats import attention_concentration
from sasq.tools.quality.config import AttentionConfig


@pytest.mark.slow  # 5-9s on a busy 2-core machine
def test_concentration_on_the_default_model():
    model = load_model()
    r = attention_concentration(model, AttentionConfig(images=8, batch=8))
    assert r["keys"] == [1, 5, 14, 30]  # cache + new tokens at each of scales 1,2,3,4
    for top in r["top"].values():
        share = np.array(top["per_layer_scale"])  # (layers, scales)
        assert share.shape == (4, 4)
        np.testing.assert_allclose(share[:, 0], 1.0)  # one key takes all the mass
        # Trained attention is far from uniform: 1.9-8x the floor here, never above 1.
        assert np.all(share <= 1.0 + 1e-9)
        assert np.all(share[:, 1:] > 1.5 * np.array(top["uniform"])[1:])
    assert all(b.attn.probs_observer is None for b in model.var.blocks)
