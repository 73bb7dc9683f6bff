"""The embedded digits split: sizes, balance, range, determinism, uint8 conversion."""

from __future__ import annotations

import numpy as np
import torch

from sasq.tools.quality.digits import DigitsSplit, load_split, to_uint8


def test_split_sizes_dtypes_and_range():
    split = load_split(16)
    assert isinstance(split, DigitsSplit)
    assert split.train_x.shape == (1437, 1, 16, 16)
    assert split.test_x.shape == (360, 1, 16, 16)
    assert split.train_y.shape == (1437,) and split.test_y.shape == (360,)
    assert split.train_x.dtype == torch.float32 and split.train_y.dtype == torch.int64
    for x in (split.train_x, split.test_x):
        assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert set(split.train_y.tolist()) == set(range(10))


def test_split_is_stratified():
    split = load_split(16)
    train_counts = torch.bincount(split.train_y, minlength=10)
    test_counts = torch.bincount(split.test_y, minlength=10)
    # 1797 images, ~180 per class: a stratified 20% test split holds 35..37 of each.
    assert int(test_counts.min()) >= 35 and int(test_counts.max()) <= 37
    assert int(train_counts.min()) >= 139 and int(train_counts.max()) <= 146
    frac = test_counts.double() / (train_counts + test_counts).double()
    assert torch.all((frac - 0.2).abs() < 0.01)


def test_split_is_cached_and_deterministic():
    assert load_split(16) is load_split(16)
    again = load_split.__wrapped__(16)
    assert torch.equal(again.train_x, load_split(16).train_x)
    assert torch.equal(again.test_y, load_split(16).test_y)


def test_native_size_matches_sklearn_pixels():
    """At image_size 8 there is no resampling: pixel v in 0..16 maps exactly to v/8 - 1."""
    split8 = load_split(8)
    assert split8.train_x.shape == (1437, 1, 8, 8)
    levels = (split8.train_x + 1.0) * 8.0
    assert torch.allclose(levels, levels.round(), atol=1e-5)
    # The upsampled images are the same digits: bilinear (align_corners=False) at 2x keeps the
    # corner pixels exactly, and 2x2 block means stay strongly correlated with the 8x8 pixels.
    up = load_split(16).train_x
    torch.testing.assert_close(up[..., ::15, ::15], split8.train_x[..., ::7, ::7])
    pooled = torch.nn.functional.avg_pool2d(up, 2).flatten()
    corr = torch.corrcoef(torch.stack([pooled, split8.train_x.flatten()]))[0, 1]
    assert corr.item() > 0.95


def test_to_uint8_endpoints_and_shape():
    img = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2)
    u8 = to_uint8(img)
    assert u8.dtype == np.uint8 and u8.shape == (1, 2, 2)
    np.testing.assert_array_equal(u8[0], [[0, 128], [255, 255]])
    assert to_uint8(load_split(16).test_x[:5]).shape == (5, 16, 16)
