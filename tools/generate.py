"""Class-conditional generation through any backend, in seeded batches, to a PNG grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sasq.models import LoadedModel, SamplingConfig
from sasq.tools.decode import Generation, StepBackend, generate
from sasq.tools.errors import UserError

BACKENDS = ("torch",)


@dataclass(frozen=True)
class GenerateConfig:
    classes: tuple[int, ...]  # one label per image
    seed: int = 0
    batch: int = 64  # chunk i of the labels is sampled with seed + i
    sampling: SamplingConfig | None = None  # None: the model's own defaults


def make_backend(name: str, model: LoadedModel) -> StepBackend:
    if name == "torch":
        from sasq.engines.torch_backend import TorchBackend

        return TorchBackend(model)
    raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def labels_for(model: LoadedModel, cls: int | None, n: int) -> tuple[int, ...]:
    """n labels: all ``cls``, or cycling through every class when cls is None."""
    K = model.var.num_classes
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if cls is None:
        return tuple(i % K for i in range(n))
    if not 0 <= cls < K:
        raise UserError(f"--class must be in 0..{K - 1} for this model, got {cls}")
    return (cls,) * n


def generate_many(model: LoadedModel, backend: StepBackend, gc: GenerateConfig) -> Generation:
    """Generate in chunks of ``gc.batch``; per-scale tokens and images concatenated."""
    sampling = gc.sampling or model.cfg.sampling
    labels = torch.tensor(gc.classes, dtype=torch.long)
    parts = [
        generate(backend, chunk, model.var.patch_nums, sampling, gc.seed + i, model.var.num_classes)
        for i, chunk in enumerate(labels.split(gc.batch))
    ]
    idx = [torch.cat([p.idx[si] for p in parts]) for si in range(len(parts[0].idx))]
    return Generation(idx, torch.cat([p.img for p in parts]))


def save_tokens(gen: Generation, labels: tuple[int, ...], path: Path) -> Path:
    """Per-scale token ids as npz (``scale0`` ... plus ``labels``), written atomically."""
    import os

    tmp = path.with_name(path.name + ".tmp.npz")
    arrays = {f"scale{si}": t.numpy() for si, t in enumerate(gen.idx)}
    np.savez(tmp, labels=np.asarray(labels), **arrays)
    os.replace(tmp, path)
    return path
