"""Class-conditional generation through any backend, in seeded batches, to a PNG grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sasq import progress
from sasq.engines.decode import Generation, StepBackend, generate
from sasq.engines.trt_plan import BatchRange
from sasq.errors import UserError
from sasq.files import atomic_path
from sasq.models import LoadedModel, ModelConfig, SamplingConfig
from sasq.models.memory import generation_estimate, require_fits

BACKENDS = ("torch", "torch-int8-cache", "ort", "ort-cuda", "ort-trt", "trt")
_ORT_PROVIDERS = {"ort": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}


@dataclass(frozen=True)
class GenerateConfig:
    classes: tuple[int, ...]  # one label per image
    seed: int = 0
    batch: int = 64  # chunk i of the labels is sampled with seed + i
    sampling: SamplingConfig | None = None  # None: the model's own defaults
    progress: bool = False  # a bar over the batches (on a terminal, ``sasq.progress``)


def make_backend(
    name: str,
    model: LoadedModel | None,
    onnx_dir: str | Path | None = None,
    threads: int = 0,
    engine: str | Path | None = None,
    batch: BatchRange | None = None,
) -> StepBackend:
    """``torch`` runs the PyTorch model (``torch-int8-cache``: with the int8 KV cache of a
    quantized export, the reference of its numerics); ``ort*`` run an export folder
    (``sasq export``) under ONNX Runtime's CPU, CUDA or TensorRT execution provider; ``trt``
    runs the step graph as a TensorRT engine (``sasq build``), the rest under ORT. ``batch``:
    the batches the TensorRT execution provider builds its engines for (``ort-trt``; a
    ``trt`` plan carries its own range)."""
    if name == "torch":
        from sasq.engines.torch_backend import TorchBackend

        return TorchBackend(model)
    if name == "torch-int8-cache":
        if onnx_dir is None:
            raise UserError(
                f"`backend` {name} needs `onnx_dir` (a quantized export)", param="onnx_dir"
            )
        from sasq.engines.torch_backend import CacheQuant, TorchBackend

        return TorchBackend(model, CacheQuant.from_export(onnx_dir))
    if name == "trt":
        if onnx_dir is None or engine is None:
            raise UserError(
                "`backend` trt needs `onnx_dir` and `engine` (a plan: build_engine)", param="engine"
            )
        from sasq.engines.trt_backend import TrtBackend

        return TrtBackend(onnx_dir, engine)
    if name in _ORT_PROVIDERS:
        if onnx_dir is None:
            raise UserError(
                f"`backend` {name} needs `onnx_dir` (an export folder)", param="onnx_dir"
            )
        from sasq.engines.ort_backend import OrtBackend
        from sasq.engines.ort_session import SessionConfig

        # int8 GEMMs need DQ -> MatMul -> Add left unfused, as in bench and profile
        cfg = SessionConfig.for_int8(provider=_ORT_PROVIDERS[name], intra_op_threads=threads)
        return OrtBackend(onnx_dir, cfg, batch=batch)
    raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


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
