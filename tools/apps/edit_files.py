"""The input files of ``sasq edit``: a PNG image and an optional binary PNG mask.

Any image size is accepted and resized to the model's resolution (area-averaged down, bicubic
up: a copy enlarged by ``sasq generate --scale K`` comes back exactly), the mask with it
(nearest, so it stays binary; the token rule then applies on the model's grid). Outpainting
keeps an input that already fits in the canvas at its size and shrinks a larger one (or one
of the canvas' size) to ``EditConfig.outpaint_scale`` of the canvas. What was resized, and
where outpainting places the input, is returned as one-line notes for the user.

A mask is white = regenerate, black = keep; a mask with transparency (RGBA, LA, a palette
with a transparent colour) reads as if laid over black, so transparent pixels are kept and
opaque ones count by their colour: a mask painted on a transparent layer works, and so
does an opaque black-and-white one saved with an alpha channel.

Images are strangers' files too: the size in the PNG header is checked before a single pixel
is decoded (sides up to ``MAX_SIDE``, and PIL's pixel-count limit turned from a warning into
a refusal: a 100-megapixel PNG was once decoded in full, and a larger one ended in PIL's
decompression-bomb traceback), and every way PIL can fail becomes a one-line ``UserError``.
Only regular files are opened (``sasq.untrusted.open_regular``): a fifo given as ``--image``
once blocked the command forever, waiting for a writer.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from sasq.engines.config import EditTask
from sasq.engines.edit import EditResult
from sasq.errors import UserError
from sasq.models import ModelConfig
from sasq.untrusted import open_regular

_IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")
MAX_SIDE = 16384  # larger sides are refused from the header (a 24 MP photo is 6000x4000)


def load_image(
    path: str | Path,
    channels: int,
    max_side: int | None = MAX_SIDE,
    size: int | None = None,
    nearest: bool = False,
    over_black: bool = False,
) -> torch.Tensor:
    """A PNG -> (1, channels, H, W) in [-1, 1]. Colour is converted to grey (and grey to RGB)
    by PIL's ITU-R 601 luma; other modes (16-bit, float, CMYK) are refused, and so is an
    image wider or taller than ``max_side``, from its header, before decoding. ``size``:
    resized to size x size (``nearest``, or area-averaged down / bicubic up).
    ``over_black``: an image with transparency is composited over black first (otherwise
    its alpha is dropped)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with warnings.catch_warnings(), open_regular(p, "image") as f:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                w, h = im.size
                if max_side is not None and max(w, h) > max_side:
                    raise UserError(f"{p}: image is {w}x{h}, sides above {max_side} px are refused")
                if im.mode not in _IMAGE_MODES:
                    raise UserError(f"{p}: image mode {im.mode} is not supported (use L or RGB)")
                if over_black and ("A" in im.getbands() or "transparency" in im.info):
                    im = Image.alpha_composite(
                        Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA")
                    )
                im = im.convert("L" if channels == 1 else "RGB")
                if size is not None and (w, h) != (size, size):
                    im = im.resize((size, size), _resample(nearest, w, h, size))
                arr = np.asarray(im, dtype=np.float32)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # PIL stops at the header of an image over its pixel limit, before our size check
        raise UserError(f"{p}: image is too large to decode safely") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{p}: cannot be read as an image ({type(e).__name__})") from None
    x_HWC = torch.from_numpy(arr).reshape(arr.shape[0], arr.shape[1], -1)
    return (x_HWC.permute(2, 0, 1)[None] / 127.5 - 1.0).contiguous()


def _resample(nearest: bool, w: int, h: int, size: int):
    from PIL import Image

    if nearest:
        return Image.Resampling.NEAREST
    return Image.Resampling.BOX if min(w, h) >= size else Image.Resampling.BICUBIC


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header; ``load_image`` reports every failure."""
    from PIL import Image

    try:
        with warnings.catch_warnings(), open_regular(path, "image") as f:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image says
            with Image.open(f) as im:
                return im.size
    except Exception:  # unreadable: load_image says so in one line
        return (0, 0)


def load_mask(path: str | Path, size: int | None = None) -> torch.Tensor:
    """A binary PNG mask (black 0 or transparent = keep, white 255 = regenerate) ->
    (1, 1, H, W) of 0/1, resized (nearest) to size x size."""
    x = load_image(path, 1, MAX_SIDE, size, nearest=True, over_black=True)
    levels = torch.unique(x)
    if not bool(((levels == -1) | (levels == 1)).all()):
        grey = sorted({round((float(v) + 1) * 127.5) for v in levels})
        shown = ", ".join(map(str, grey[:4])) + (", ..." if len(grey) > 4 else "")
        raise UserError(
            f"{path}: mask must be binary (black 0 or transparent = keep, white 255 = "
            f"regenerate), found {len(grey)} grey level{'s' if len(grey) != 1 else ''} ({shown})"
        )
    return (x > 0).float()


def load_inputs(
    image_path: str | Path,
    mask_path: str | Path | None,
    cfg: ModelConfig,
    task,
    outpaint_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Image and optional mask of an edit at the model's resolution, and one-line notes of
    what was resized (and, outpainting, where the input is placed). The mask must have the
    image's size or the model's. ``outpaint_scale``: None, ``EditConfig``'s default."""
    from sasq.engines.config import EditConfig

    S, task = cfg.vqvae.image_size, EditTask(task)
    if mask_path is not None and task == EditTask.OUTPAINT:
        raise UserError("outpaint makes its own mask (everything around the input); drop --mask")
    for p in (image_path, mask_path):  # a fifo, a device: refused before anything reads it
        if p is not None:
            open_regular(p, "image").close()
    w, h = image_size(image_path)
    if task == EditTask.OUTPAINT:
        scale = EditConfig.outpaint_scale if outpaint_scale is None else outpaint_scale
        image, note = _outpaint_input(image_path, cfg.vqvae.in_channels, (w, h), S, scale)
        return image, None, [note]
    image = load_image(image_path, cfg.vqvae.in_channels, size=S)
    notes = [] if (w, h) == (S, S) else [f"resized {w}x{h} -> {S}x{S} (the model's size)"]
    if notes and w != h:
        notes[0] += ", aspect ratio not kept"
    if mask_path is None:
        return image, None, notes
    mw, mh = image_size(mask_path)  # (0, 0): unreadable, and load_mask says why
    if (mw, mh) != (0, 0) and (mw, mh) not in ((w, h), (S, S)):
        raise UserError(
            f"{mask_path}: mask is {mw}x{mh}; give it the image's size ({w}x{h}) "
            f"or the model's ({S}x{S})"
        )
    mask = load_mask(mask_path, size=S)
    if (mw, mh) != (S, S):
        notes.append(f"mask resized {mw}x{mh} -> {S}x{S} (nearest)")
    return image, mask, notes


def save_edit_sheet(res: EditResult, out: str | Path, n: int, title: str | None = None) -> Path:
    """One row per input: input (on the canvas) | mask | the n results."""
    from sasq.tools.report.image_grid import save_grid

    B, C = res.canvas.shape[:2]
    tiles, labels = [], []
    for i in range(B):
        # Regenerated pixels light grey, kept ones black: the tile stays visible on white.
        tiles += [res.canvas[i : i + 1], (res.mask[i : i + 1] * 1.6 - 1).expand(1, C, -1, -1)]
        tiles.append(res.img[i * n : (i + 1) * n])
        labels += ["input", "mask"] + [f"edit {j}" for j in range(n)]
    return save_grid(torch.cat(tiles), out, labels=labels, nrow=n + 2, title=title)


def _outpaint_input(
    path: str | Path, channels: int, wh: tuple[int, int], S: int, scale: float
) -> tuple[torch.Tensor, str]:
    """The input to outpaint and a note of the size and place it takes on the S x S canvas
    (``edit.outpaint_canvas`` places it): one that fits and is smaller is kept as it is; one
    of the canvas' size, or larger (resized to it first), is shrunk to ``scale`` of it."""
    from sasq.engines.edit import outpaint_origin, outpaint_side

    w, h = wh
    fits = w <= S and h <= S and (w, h) != (0, 0)
    image = load_image(path, channels, size=None if fits else S)
    if fits and (w, h) != (S, S):
        pw, ph, how = w, h, f"kept at {w}x{h}"
    else:
        pw = ph = outpaint_side(S, scale)
        how = f"{'shrunk' if fits else 'resized'} {w}x{h} -> {pw}x{ph} (outpaint scale {scale:g})"
        if w != h:
            how += ", aspect ratio not kept"
    x0, y0 = outpaint_origin(pw, ph, S)
    return image, f"{how}; placed at x={x0}, y={y0} (top left), centred on the {S}x{S} canvas"
