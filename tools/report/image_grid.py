"""Labelled PNG grids of generated digits, and FP-vs-int8 side-by-side sheets.

16x16 images are too small to judge by eye, so tiles are upscaled by pixel replication
(nearest neighbour: no smoothing that would hide quantization artifacts) and each carries a
short label (class, seed). Files are written to a temporary name and renamed, so a reader
(a browser, a CI artifact upload) never sees a half-written PNG.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from sasq.files import atomic_path

PAD = 2  # pixels between tiles and around the grid
LABEL_H = 12  # height of the text strip under each tile (PIL's default font is 10 px)
TITLE_H = 16
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font (10 px FreeType, or the bitmap font without FreeType): no files."""
    return ImageFont.load_default()


def _to_rgb_uint8(img_BCHW: torch.Tensor) -> np.ndarray:
    """[-1, 1] images with 1 or 3 channels -> uint8 (B, H, W, 3)."""
    if img_BCHW.ndim != 4 or img_BCHW.shape[1] not in (1, 3):
        raise ValueError(f"save_grid needs (B, 1|3, H, W), got {tuple(img_BCHW.shape)}")
    x = img_BCHW.detach().float().cpu().clamp(-1.0, 1.0)
    u8_BCHW = ((x + 1.0) * 127.5).round().to(torch.uint8)
    if u8_BCHW.shape[1] == 1:
        u8_BCHW = u8_BCHW.expand(-1, 3, -1, -1)
    return u8_BCHW.permute(0, 2, 3, 1).contiguous().numpy()


def _atomic_save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".png") as tmp:  # PIL picks the format by the suffix
        img.save(tmp, format="PNG")
    return path


def grid_title(*parts: object) -> str:
    """A sheet title from its parts, ``ort | seed 0 | cfg 2``: the 10 px default font draws
    a space about one pixel wide, so "ort seed=0" read as "ortseed=0"."""
    return " | ".join(str(p) for p in parts if p is not None and str(p))


def _draw_centered(draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    left, top, right, bottom = draw.textbbox((0, 0), text, font=_font())
    x = x0 + max((x1 - x0 - (right - left)) // 2, 0) - left
    y = y0 + max((y1 - y0 - (bottom - top)) // 2, 0) - top
    draw.text((x, y), text, fill=TEXT, font=_font())


class GridLayout(NamedTuple):
    """Where save_grid puts things: sheet size, columns, cell pitch, first row's top edge."""

    width: int
    height: int
    cols: int
    cell_w: int
    cell_h: int
    top: int

    def origin(self, i: int) -> tuple[int, int]:
        """Top-left pixel (x, y) of tile i (row-major)."""
        return PAD + (i % self.cols) * self.cell_w, self.top + (i // self.cols) * self.cell_h


def grid_layout(
    n: int, tile_h: int, tile_w: int, *, nrow: int, labels: bool, title: bool
) -> GridLayout:
    """Layout of n tiles of tile_h x tile_w pixels, nrow per row, with optional labels/title."""
    cols = max(min(nrow, n), 1)
    rows = max((n + cols - 1) // cols, 1)
    cell_w, cell_h = tile_w + PAD, tile_h + PAD + (LABEL_H if labels else 0)
    top = PAD + (TITLE_H if title else 0)
    return GridLayout(PAD + cols * cell_w, top + rows * cell_h, cols, cell_w, cell_h, top)


def check_grid_fits(cfg, n: int, nrow: int, scale: int = 4) -> None:
    """Refuse, before generating, a grid sheet (and its PNG encoding) that cannot fit in
    memory: n tiles of the model's images upscaled by ``scale``, ``nrow`` per row."""
    from sasq.models.memory import Estimate, require_fits

    tile = cfg.vqvae.image_size * scale
    lay = grid_layout(n, tile, tile, nrow=nrow, labels=True, title=True)
    sheet = Estimate((("grid sheet", 2 * 3 * lay.width * lay.height),))
    require_fits(sheet, f"a grid of {n} images", "lower --n")


def save_grid(
    img_B1HW_or_B3HW: torch.Tensor,
    path: str | Path,
    *,
    labels: list[str] | None = None,
    nrow: int = 8,
    scale: int = 4,
    title: str | None = None,
) -> Path:
    """Write images in [-1, 1] as a PNG grid, `nrow` tiles per row, each upscaled by `scale`.

    The sheet's size and tile positions are `grid_layout(...)`; a title wider than the grid
    widens the sheet to the right.
    """
    rgb_BHW3 = _to_rgb_uint8(img_B1HW_or_B3HW)
    n, h, w = rgb_BHW3.shape[:3]
    if labels is not None and len(labels) != n:
        raise ValueError(f"save_grid: {len(labels)} labels for {n} images")
    if scale < 1:
        raise ValueError(f"save_grid: scale must be >= 1, got {scale}")
    tile_h, tile_w = h * scale, w * scale
    lay = grid_layout(
        n, tile_h, tile_w, nrow=nrow, labels=labels is not None, title=title is not None
    )
    width = lay.width
    if title is not None:
        left, _, right, _ = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
            (0, 0), title, font=_font()
        )
        width = max(width, right - left + 2 * PAD)
    sheet = Image.new("RGB", (width, lay.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title is not None:
        _draw_centered(draw, title, (0, PAD, width, PAD + TITLE_H))
    for i in range(n):
        big_hw3 = rgb_BHW3[i].repeat(scale, axis=0).repeat(scale, axis=1)
        x0, y0 = lay.origin(i)
        sheet.paste(Image.fromarray(big_hw3), (x0, y0))
        if labels is not None:
            _draw_centered(draw, labels[i], (x0, y0 + tile_h, x0 + tile_w, y0 + tile_h + LABEL_H))
    return _atomic_save(sheet, Path(path))


def side_by_side(
    left: Path, right: Path, out: Path, titles: Sequence[str] | None = ("FP", "int8")
) -> Path:
    """Paste two PNGs next to each other under their titles (e.g. FP grid | int8 grid);
    ``titles=None`` for images that carry their own (grids saved with a title)."""
    if titles is not None and len(titles) != 2:
        raise ValueError(f"side_by_side needs two titles, got {len(titles)}")
    with Image.open(left) as a, Image.open(right) as b:
        im_l, im_r = a.convert("RGB"), b.convert("RGB")
    gap = 4 * PAD
    top = 0 if titles is None else TITLE_H
    width = im_l.width + gap + im_r.width
    height = top + max(im_l.height, im_r.height)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    sheet.paste(im_l, (0, top))
    sheet.paste(im_r, (im_l.width + gap, top))
    if titles is not None:
        draw = ImageDraw.Draw(sheet)
        _draw_centered(draw, titles[0], (0, 0, im_l.width, TITLE_H))
        _draw_centered(draw, titles[1], (im_l.width + gap, 0, width, TITLE_H))
    return _atomic_save(sheet, Path(out))


def save_images(
    img_BCHW: torch.Tensor, folder: str | Path, labels: Sequence[str], scale: int = 1
) -> list[Path]:
    """Each image as its own PNG at the model's resolution, ``{i:04d}_class{label}.png``
    (grey images as 8-bit grey, so ``sasq edit`` reads back exactly what was generated), and
    with ``scale`` > 1 also an enlarged copy ``..._x{scale}.png`` (nearest: the same pixels,
    bigger, which ``edit`` shrinks back exactly)."""
    if scale < 1:
        raise ValueError(f"save_images: scale must be >= 1, got {scale}")
    rgb_BHW3 = _to_rgb_uint8(img_BCHW)
    grey = img_BCHW.shape[1] == 1
    paths = []
    for i, (arr, label) in enumerate(zip(rgb_BHW3, labels, strict=True)):
        im = Image.fromarray(arr[..., 0] if grey else arr)
        stem = f"{i:04d}_class{label}"
        paths.append(_atomic_save(im, Path(folder) / f"{stem}.png"))
        if scale > 1:
            big = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
            paths.append(_atomic_save(big, Path(folder) / f"{stem}_x{scale}.png"))
    return paths
