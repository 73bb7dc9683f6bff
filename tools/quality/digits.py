"""The embedded dataset: scikit-learn's bundled 8x8 digits, upsampled, split deterministically.

`load_digits()` ships inside scikit-learn (1797 images, values 0..16), so the default model
trains and is evaluated on a fresh machine without any download. Images are upsampled to a
power-of-two size so the VQVAE's downsampling and the patch_nums list work out, and scaled to
[-1, 1], the range the decoder's output uses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TEST_SIZE = 0.2
SPLIT_SEED = 0
NUM_CLASSES = 10


@dataclass(frozen=True)
class DigitsSplit:
    """Train/test tensors: images float32 (N, 1, S, S) in [-1, 1], labels int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _to_images(raw_N64: np.ndarray, image_size: int) -> torch.Tensor:
    """0..16 flat 8x8 pixels -> (N, 1, S, S) float32 in [-1, 1] (bilinear upsampling)."""
    img_N188 = torch.from_numpy(raw_N64.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    if image_size != 8:
        img_N188 = F.interpolate(
            img_N188, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    # Bilinear weights are convex, so [0, 1] stays [0, 1]; the clamp only removes round-off.
    return (img_N188.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


@functools.lru_cache(maxsize=4)
def load_split(image_size: int = 16) -> DigitsSplit:
    """The fixed 80/20 stratified split (random_state=0): 1437 train, 360 test images.

    Cached per image_size: callers share the tensors, so treat them as read-only.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_N64 = np.asarray(data.data)
    y_N = np.asarray(data.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x_N64, y_N, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y_N
    )
    return DigitsSplit(
        train_x=_to_images(x_tr, image_size),
        train_y=torch.from_numpy(np.ascontiguousarray(y_tr)),
        test_x=_to_images(x_te, image_size),
        test_y=torch.from_numpy(np.ascontiguousarray(y_te)),
    )


def to_uint8(img_B1HW: torch.Tensor) -> np.ndarray:
    """[-1, 1] images -> uint8 (B, H, W), rounding to nearest; values outside are clipped."""
    x_BHW = img_B1HW.detach().float().cpu()[:, 0]
    return ((x_BHW.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).numpy()
