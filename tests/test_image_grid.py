"""PNG grids: size, tile pixels equal the input, labels and title, atomic write, side by side."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sasq.tools.report.image_grid import (
    LABEL_H,
    PAD,
    TITLE_H,
    grid_layout,
    grid_title,
    save_grid,
    side_by_side,
)


def _ramp_images(n: int) -> torch.Tensor:
    """n distinct 16x16 images with values on the uint8 grid k/127.5 - 1, in [-1, 1]."""
    k = (torch.arange(n * 256).reshape(n, 1, 16, 16) * 7) % 256
    return k.float() / 127.5 - 1.0


def test_grid_size_and_tile_pixels(tmp_path):
    imgs = _ramp_images(10)
    scale = 3
    path = save_grid(imgs, tmp_path / "new_dir" / "grid.png", nrow=4, scale=scale)
    assert path.exists() and not list(tmp_path.glob("new_dir/*.tmp.png"))
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    cell = 16 * scale + PAD
    assert arr.shape == (PAD + 3 * cell, PAD + 4 * cell, 3)  # 10 tiles, 4 per row: 3 rows
    expected = ((imgs + 1.0) * 127.5).round().to(torch.uint8).numpy()
    for i in (0, 5, 9):
        y0 = PAD + (i // 4) * cell
        x0 = PAD + (i % 4) * cell
        tile = arr[y0 : y0 + 16 * scale, x0 : x0 + 16 * scale]
        # Nearest-neighbour upscaling: every scale x scale block is one input pixel.
        np.testing.assert_array_equal(tile[::scale, ::scale, 0], expected[i, 0])
        last = tile[scale - 1 :: scale, scale - 1 :: scale, 1]
        np.testing.assert_array_equal(last, expected[i, 0])
        assert (tile[..., 0] == tile[..., 2]).all()
    # The unused cells of the last row stay background.
    assert (arr[PAD + 2 * cell :, PAD + 2 * cell :] == 255).all()


def test_labels_and_title_layout(tmp_path):
    imgs = -torch.ones(3, 1, 16, 16)  # black tiles
    path = save_grid(imgs, tmp_path / "g.png", labels=["0", "1", "2"], scale=4, title="T")
    lay = grid_layout(3, 64, 64, nrow=8, labels=True, title=True)
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape == (PAD + TITLE_H + 64 + PAD + LABEL_H, PAD + 3 * (64 + PAD), 3)
    assert arr.shape[:2] == (lay.height, lay.width)
    x0, y0 = lay.origin(2)
    assert (arr[y0 : y0 + 64, x0 : x0 + 64] == 0).all()
    label_strip = arr[y0 + 64 : y0 + 64 + LABEL_H, x0 : x0 + 64]
    assert (label_strip < 128).any() and (label_strip == 255).any()  # some dark text
    title_strip = arr[PAD : PAD + TITLE_H]
    assert (title_strip < 128).any()


def test_rgb_input_and_errors(tmp_path):
    rgb = torch.zeros(2, 3, 8, 8)
    rgb[:, 0] = 1.0  # red
    with Image.open(save_grid(rgb, tmp_path / "rgb.png", scale=1)) as im:
        arr = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(arr[PAD, PAD], [255, 128, 128])
    with pytest.raises(ValueError):
        save_grid(torch.zeros(2, 2, 8, 8), tmp_path / "bad.png")
    with pytest.raises(ValueError):
        save_grid(torch.zeros(2, 1, 8, 8), tmp_path / "bad.png", labels=["only one"])


def test_side_by_side(tmp_path):
    left = save_grid(-torch.ones(4, 1, 16, 16), tmp_path / "fp.png", scale=2)
    right = save_grid(torch.ones(2, 1, 16, 16), tmp_path / "q.png", scale=2)
    out = side_by_side(left, right, tmp_path / "out" / "both.png")
    with Image.open(left) as a, Image.open(right) as b, Image.open(out) as c:
        wl, hl, wr, hr = a.width, a.height, b.width, b.height
        arr = np.asarray(c.convert("RGB"))
    assert arr.shape[0] == TITLE_H + max(hl, hr)
    assert arr.shape[1] > wl + wr
    assert (arr[TITLE_H + PAD, PAD] == 0).all()  # first black tile of the left grid
    assert (arr[:TITLE_H] < 128).any()  # titles drawn
    assert not list(tmp_path.glob("out/*.tmp.png"))
    # grids that carry their own titles: no second title row above them
    bare = side_by_side(left, right, tmp_path / "bare.png", titles=None)
    with Image.open(bare) as d:
        arr = np.asarray(d.convert("RGB"))
    assert arr.shape[0] == max(hl, hr) and (arr[PAD, PAD] == 0).all()


def test_grid_title_separates_its_parts():
    """The 10 px font draws a space ~1 px wide: "ort seed=0" read as "ortseed=0"."""
    assert grid_title("ort", "seed 0", "cfg 2") == "ort | seed 0 | cfg 2"
    assert grid_title("inpaint", None, "", "torch") == "inpaint | torch"
