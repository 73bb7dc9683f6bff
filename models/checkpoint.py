"""Loading weights without unpickling code: safetensors, or torch.load(weights_only=True).

Official ``.pth`` checkpoints are plain state dicts and load with ``weights_only=True``; a
file that needs arbitrary objects to unpickle is refused with ``CheckpointError``. They are
memory-mapped and their tensors become the module's own (``assign``), so loading VAR-d36
(9.4 GB of fp32) needs the weights' size once, not twice.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sasq.errors import UserError
from sasq.files import atomic_path
from sasq.models.validate import first_non_finite

log = logging.getLogger(__name__)
EMA_HITS = "quantize.ema_vocab_hit_SV"  # the VQVAE's codebook usage statistics of training


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded safely or does not fit the model: a user's file,
    so the CLI reports it in one line like any ``UserError``."""


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises several types for corrupt headers
            raise CheckpointError(f"{p}: not a valid safetensors file ({e})") from None
    try:
        obj = _torch_load(p)
    except Exception as e:
        raise CheckpointError(
            f"{p}: refused, it is not a plain weights file ({_why_refused(e)})"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p}: does not hold a state dict of tensors")
    return obj


def _torch_load(p: Path):
    try:  # memory-mapped: pages are read when used, and never held twice
        return torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # only the old (pre zip) format cannot be mapped
            raise
    return torch.load(str(p), map_location="cpu", weights_only=True)


def _why_refused(e: Exception) -> str:
    """The useful part of torch's refusal, without its advice to retry unsafely."""
    text = str(e)
    if m := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return f"loading it would run code: it needs {m.group(1)}"
    if "Unsupported operand" in text or "weights_only" in text.lower().replace(" ", "_"):
        return "it holds pickled objects other than tensors, or is corrupt"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"corrupt or not a torch file: {first.split('. ')[0][:120]}"


def load_into(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Strict load of a checkpoint file (see ``assign_state``)."""
    assign_state(module, load_state_dict(path), path)


def assign_state(
    module: torch.nn.Module, sd: dict[str, torch.Tensor], source: str | os.PathLike
) -> None:
    """Strict load: every parameter and buffer name and shape must match. The tensors of
    ``sd`` become the module's (cast to its dtypes), so ``module`` may be built on the meta
    device. As in the official ``VQVAE.load_state_dict``, codebook usage statistics recorded
    over another number of scales are replaced by the model's own (zeros), with a warning."""
    own = module.state_dict()
    hits = sd.get(EMA_HITS)
    if hits is not None and EMA_HITS in own and hits.shape[:1] != own[EMA_HITS].shape[:1]:
        log.warning(
            "%s: %s %s recorded over another number of scales; kept the model's own %s "
            "(unused at inference)",
            source,
            EMA_HITS,
            tuple(hits.shape),
            tuple(own[EMA_HITS].shape),
        )
        sd = {**sd, EMA_HITS: torch.zeros(own[EMA_HITS].shape)}
    if (
        bad := first_non_finite(sd, own, frozenset(n for n, _ in module.named_buffers()))
    ) is not None:
        raise CheckpointError(
            f"{source}: tensor {bad[0]} has {bad[1]} non-finite value(s) (NaN/Inf)"
        )
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or bad:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            k = bad[0]
            detail.append(
                f"{len(bad)} shape mismatches (e.g. {k}: {tuple(sd[k].shape)} "
                f"vs {tuple(own[k].shape)})"
            )
        what = f"{source}: does not fit {type(module).__name__}: "
        raise CheckpointError(what + "; ".join(detail))
    sd = {k: v.to(own[k].dtype) for k, v in sd.items()}
    module.load_state_dict(sd, strict=True, assign=True)


def save_safetensors(module: torch.nn.Module, path: str | os.PathLike, meta: dict | None = None):
    """Write atomically (``sasq.files``) so a crash leaves no half file; the file follows the
    umask like any other output."""
    sd = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata={k: str(v) for k, v in (meta or {}).items()})
