"""The evaluation CNN: size, accuracy after a short training, determinism, save/load, predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sasq.tools.quality.classifier import (
    DigitsClassifier,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from sasq.tools.quality.digits import DigitsSplit, load_split


@pytest.fixture(scope="module")
def trained() -> tuple[DigitsClassifier, dict]:
    # The default recipe (8 epochs, one thread): ~2 s on an idle core, ~99.4% held out.
    return train_classifier(load_split(16), seed=0, progress=False)


def _tiny_split() -> DigitsSplit:
    split = load_split(16)
    return DigitsSplit(split.train_x[:96], split.train_y[:96], split.test_x[:32], split.test_y[:32])


def test_shapes_and_parameter_budget():
    model = DigitsClassifier().eval()
    x = torch.zeros(3, 1, 16, 16)
    assert model(x).shape == (3, 10)
    assert model.features(x).shape == (3, 64)
    assert sum(p.numel() for p in model.parameters()) < 100_000


@pytest.mark.slow  # 6s on a busy 2-core machine
def test_training_reaches_95_percent(trained):
    model, metrics = trained
    assert not model.training
    assert metrics["test_accuracy"] >= 0.95
    assert metrics["train_accuracy"] >= 0.95
    split = load_split(16)
    probs, feats = predict(model, split.test_x, batch=100)
    assert probs.shape == (360, 10) and feats.shape == (360, 64)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    assert feats.min() >= 0.0  # features are taken after the ReLU
    acc = float((probs.argmax(1) == split.test_y.numpy()).mean())
    assert acc == pytest.approx(metrics["test_accuracy"])


def test_same_seed_same_weights():
    threads = torch.get_num_threads()
    a, _ = train_classifier(_tiny_split(), seed=3, epochs=1, batch_size=32, progress=False)
    b, _ = train_classifier(_tiny_split(), seed=3, epochs=1, batch_size=32, progress=False)
    c, _ = train_classifier(_tiny_split(), seed=4, epochs=1, batch_size=32, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    assert torch.get_num_threads() == threads  # the training's thread setting is scoped


def test_save_load_roundtrip_is_strict(tmp_path, trained):
    from safetensors.torch import load_file, save_file

    model, _ = trained
    path = save_classifier(model, tmp_path / "sub" / "clf.safetensors")
    loaded = load_classifier(path)
    assert not loaded.training
    x = load_split(16).test_x[:16]
    p0, f0 = predict(model, x)
    p1, f1 = predict(loaded, x)
    np.testing.assert_array_equal(p0, p1)
    np.testing.assert_array_equal(f0, f1)

    state = load_file(str(path))
    del state["fc.bias"]
    save_file(state, tmp_path / "missing.safetensors")
    with pytest.raises(RuntimeError, match="fc.bias"):
        load_classifier(tmp_path / "missing.safetensors")
