"""Class-conditional generation through any backend, in seeded batches, to a PNG grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sasq import progress
from sasq.engines.config import GenerateConfig
from sasq.engines.decode import Generation, StepBackend, generate
from sasq.errors import UserError
from sasq.files import atomic_path
from sasq.models import LoadedModel, ModelConfig, SamplingConfig
from sasq.models.memory import generation_estimate, require_fits


def labels_for(cfg: ModelConfig, cls: int | None, n: int) -> tuple[int, ...]:
    """n labels: all ``cls``, or cycling through every class when cls is None."""
    K = cfg.var.num_classes
    if n < 1:
        raise UserError(f"`n` must be at least 1, got {n}", param="n")
    if cls is None:
        return tuple(i % K for i in range(n))
    if not 0 <= cls < K:
        raise UserError(f"`cls` must be in 0..{K - 1} for this model, got {cls}", param="cls")
    return (cls,) * n


def check_sampling(cfg: ModelConfig, sampling: SamplingConfig) -> None:
    """Sampling settings in their ranges (top-k at most the vocabulary): one-line errors."""
    from sasq.models.validate import check_config_section

    try:
        check_config_section(sampling)
    except ValueError as e:
        raise UserError(str(e)) from None
    if sampling.top_k > cfg.vqvae.vocab_size:
        raise UserError(
            f"`top_k` {sampling.top_k} exceeds the vocabulary ({cfg.vqvae.vocab_size})",
            param="top_k",
        )


def generate_many(
    model: ModelConfig | LoadedModel, backend: StepBackend, gc: GenerateConfig
) -> Generation:
    """Generate in chunks of ``gc.batch``; per-scale tokens and images concatenated.

    ``model`` is the model's config, or the loaded model itself (its ``cfg`` is used), so
    ``generate_many(load_model(), ...)`` works as one would first write it."""
    cfg = model.cfg if isinstance(model, LoadedModel) else model
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"generate_many takes a ModelConfig or a LoadedModel, got {type(model)}")
    sampling = gc.sampling or cfg.sampling
    check_sampling(cfg, sampling)
    n, batch = len(gc.classes), min(gc.batch, len(gc.classes))
    if gc.batch < 1:
        raise UserError(f"`batch` must be at least 1, got {gc.batch}", param="batch")
    if (limits := getattr(backend, "batch_range", None)) is not None:
        limits.check(batch, "generate")  # a TensorRT engine runs only inside its profiles
    need = generation_estimate(cfg, batch, images=n)
    require_fits(
        need,
        f"generating {n} images in batches of {batch}",
        "lower `batch` or the number of images",
    )
    labels = torch.tensor(gc.classes, dtype=torch.long)
    pns, K = tuple(cfg.var.patch_nums), cfg.var.num_classes
    chunks = labels.split(gc.batch)
    parts = [
        generate(backend, chunk, pns, sampling, gc.seed + i, K)
        for i, chunk in enumerate(progress.bar(chunks, "generate", enabled=gc.progress))
    ]
    idx = [torch.cat([p.idx[si] for p in parts]) for si in range(len(parts[0].idx))]
    return Generation(idx, torch.cat([p.img for p in parts]))


def save_tokens(gen: Generation, labels: tuple[int, ...], path: Path) -> Path:
    """Per-scale token ids as npz (``scale0`` ... plus ``labels``), written atomically."""
    arrays = {f"scale{si}": t.numpy() for si, t in enumerate(gen.idx)}
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez appends .npz to other names
        np.savez(tmp, labels=np.asarray(labels), **arrays)
    return path
