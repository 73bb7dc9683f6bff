"""The configs of the decoding loop's features (generation, zero-shot editing), light to
import: the CLI builds its flags from their fields without loading torch."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sasq.models import SamplingConfig


@dataclass(frozen=True)
class GenerateConfig:
    classes: tuple[int, ...]  # one label per image
    seed: int = 0
    batch: int = 64  # chunk i of the labels is sampled with seed + i
    sampling: SamplingConfig | None = None  # None: the model's own defaults
    progress: bool = False  # a bar over the batches (on a terminal, ``sasq.progress``)


class EditTask(str, Enum):
    INPAINT = "inpaint"  # regenerate the masked (white) pixels
    OUTPAINT = "outpaint"  # the input centred (a full-size one shrunk first); regenerate the rest
    CLASS_EDIT = "class-edit"  # regenerate the masked pixels (default: all) under another class


class TokenRule(str, Enum):
    ANY = "any"  # a token is regenerated if any pixel of its cell is masked
    MOST = "most"  # ... if at least half of its cell is masked


@dataclass(frozen=True)
class EditConfig:
    task: EditTask
    cls: int | None = None  # condition; None: unconditional (inpaint/outpaint only)
    seed: int = 0
    n: int = 1  # samples per input image (one generator, so they differ)
    rule: TokenRule = TokenRule.ANY
    outpaint_scale: float = 0.5  # a full-canvas input to outpaint is first shrunk by this
    fill: float = -1.0  # canvas value around an outpainted input before encoding (black)
    reencode: bool = True  # outside tokens re-encoded after the edited coarse scales
    sampling: SamplingConfig | None = None  # None: the model's own defaults
