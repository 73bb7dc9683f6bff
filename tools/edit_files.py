"""The input files of ``sasq edit``: a PNG image and an optional binary PNG mask.

Images are strangers' files too: the size in the PNG header is checked against the model's
canvas before a single pixel is decoded (a 100-megapixel PNG was decoded in full before the
old size check, and a larger one ended in PIL's decompression-bomb traceback), and every
way PIL can fail becomes a one-line ``UserError``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from sasq.models import ModelConfig
from sasq.tools.errors import UserError

_IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


def load_image(path: str | Path, channels: int, max_side: int | None = None) -> torch.Tensor:
    """A PNG -> (1, channels, H, W) in [-1, 1]. Colour is converted to grey (and grey to RGB)
    by PIL's ITU-R 601 luma; other modes (16-bit, float, CMYK) are refused, and so is an
    image wider or taller than ``max_side``, from its header, before decoding."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such image file: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if max_side is not None and max(w, h) > max_side:
                    canvas = f"{max_side}x{max_side}"
                    raise UserError(f"{p}: image is {w}x{h}, larger than the {canvas} canvas")
                if im.mode not in _IMAGE_MODES:
                    raise UserError(f"{p}: image mode {im.mode} is not supported (use L or RGB)")
                arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # PIL stops at the header of an image over its pixel limit, before our size check
        raise UserError(f"{p}: image is too large to decode safely") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{p}: cannot be read as an image ({type(e).__name__})") from None
    x_HWC = torch.from_numpy(arr).reshape(arr.shape[0], arr.shape[1], -1)
    return (x_HWC.permute(2, 0, 1)[None] / 127.5 - 1.0).contiguous()


def load_mask(path: str | Path, max_side: int | None = None) -> torch.Tensor:
    """A binary PNG mask (black 0 = keep, white 255 = regenerate) -> (1, 1, H, W) of 0/1."""
    x = load_image(path, 1, max_side)
    levels = torch.unique(x)
    if not bool(((levels == -1) | (levels == 1)).all()):
        raise UserError(
            f"{path}: mask must be binary (only black 0 and white 255), "
            f"found {levels.numel()} grey levels"
        )
    return (x > 0).float()


def load_inputs(
    image_path: str | Path, mask_path: str | Path | None, cfg: ModelConfig, task
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image and optional mask files of an edit; ``edit`` checks sizes and modes again."""
    from sasq.tools.edit import EditTask

    S = cfg.vqvae.image_size
    image = load_image(image_path, cfg.vqvae.in_channels, max_side=S)
    if mask_path is None:
        return image, None
    if EditTask(task) == EditTask.OUTPAINT:
        raise UserError("outpaint makes its own mask (everything around the input); drop --mask")
    mask = load_mask(mask_path, max_side=S)
    if tuple(mask.shape[2:]) != (S, S):
        h, w = mask.shape[2:]
        raise UserError(f"{mask_path}: mask is {w}x{h}, the model's images are {S}x{S}")
    return image, mask
