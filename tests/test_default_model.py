"""The committed default model: size, classifier, VQ round trip, generation quality."""

from __future__ import annotations

import pytest
import torch

from sasq.engines.backends import make_backend
from sasq.metrics import psnr
from sasq.models import DEFAULT_DIR, load_model
from sasq.tools.quality.digits import load_split
from sasq.tools.quality.scores import (
    GenQualityConfig,
    default_classifier,
    generation_quality,
)


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_default_files_are_small_and_documented():
    files = list(DEFAULT_DIR.glob("*.safetensors"))
    assert {f.name for f in files} == {
        "vqvae.safetensors",
        "var.safetensors",
        "classifier.safetensors",
    }
    assert sum(f.stat().st_size for f in files) < 10_000_000
    card = (DEFAULT_DIR / "MODEL_CARD.md").read_text()
    assert "sasq train-default" in card and "Seed 0" in card


def test_classifier_recognises_held_out_digits():
    split = load_split(16)
    with torch.no_grad():
        acc = (default_classifier()(split.test_x).argmax(1) == split.test_y).float().mean()
    assert acc >= 0.95


def test_vq_round_trip_psnr_on_held_out_digits(model):
    # Measured 29.0-29.6 dB for the committed model; 27 dB leaves room for retraining noise.
    x = load_split(16).test_x
    rec = model.vqvae.idx_to_img(model.vqvae.img_to_idx(x))
    assert psnr(rec, x) >= 27.0


@pytest.mark.slow  # 8s on a busy 2-core machine
def test_generated_digits_are_the_requested_class(model):
    q = generation_quality(
        model, make_backend("torch", model), default_classifier(), GenQualityConfig(per_class=20)
    )
    assert q["class_accuracy"] >= 0.9
    assert q["fid_to_real_test"] < 20.0


def test_digits32_loads_by_name_with_its_155_token_sequence():
    from sasq.models import load_model

    m = load_model("digits32")
    assert m.cfg.vqvae.image_size == 32
    assert sum(p * p for p in m.cfg.var.patch_nums) == 155
    assert m.path.name == "digits32"
    size = sum(f.stat().st_size for f in m.path.iterdir())
    assert size < 10 * 2**20  # what the repository can carry
