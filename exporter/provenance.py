"""Which model an export was made from, so runs that mix models are refused.

``export_model`` records ``extra["source_model"]``: the sha256 of the model's config and of
its weights (every tensor's name, dtype, shape and bytes, VQVAE and VAR), taken from the
model as the user gave it (before GPS rewrites weights: a GPS export computes the same
function and counts as made from that model). Derived exports (``sasq quantize``, the ORT
peer) copy the manifest's ``extra``, so an int8 export carries its FP source's record.

``generate``/``edit``/``bench``/``compare`` refuse, in one line, an export not made from the
``--model`` they were given and a pair of exports of different models (which would
otherwise only show up as a FAILED comparison or wrong images). Exports written before this
record existed are compared by their model config alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from sasq.errors import UserError
from sasq.models import LoadedModel

KEY = "source_model"


def _weights_sha256(model: LoadedModel) -> str:
    h = hashlib.sha256()
    for prefix, module in (("vqvae.", model.vqvae), ("var.", model.var)):
        for name, t in sorted(module.state_dict().items()):
            t = t.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{prefix}{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _config_sha256(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def model_fingerprint(model: LoadedModel) -> dict[str, str]:
    """``{"config_sha256", "weights_sha256"}`` of a loaded model."""
    return {
        "config_sha256": _config_sha256(json.loads(model.cfg.to_json())),
        "weights_sha256": _weights_sha256(model),
    }


def _record(folder: Path) -> tuple[dict, dict | None]:
    """(model_config, source_model record or None) of an export folder."""
    from sasq.exporter.manifest import load_manifest

    m = load_manifest(folder)
    rec = m.extra.get(KEY)
    ok = isinstance(rec, dict) and all(
        isinstance(rec.get(k), str) for k in ("config_sha256", "weights_sha256")
    )
    return m.model_config, rec if ok else None


def require_made_from(model: LoadedModel, folder: str | Path, flag: str = "`model`") -> None:
    """``UserError`` if the export ``folder`` was not made from ``model``; ``flag``: how the
    message names the model given (a backticked name is a parameter the CLI shows as its
    flag)."""
    folder = Path(folder)
    config, rec = _record(folder)
    if config != json.loads(model.cfg.to_json()):
        raise UserError(
            f"{folder}: exported from a different model config than the one given ({flag}); "
            "pass the model it was exported from, or export this one"
        )
    if rec is not None and rec["weights_sha256"] != _weights_sha256(model):
        raise UserError(
            f"{folder}: exported from different weights than the model given ({flag}); "
            "pass the model it was exported from, or export this one"
        )


def require_same_source(a: str | Path, b: str | Path) -> None:
    """``UserError`` if exports ``a`` and ``b`` were made from different models."""
    (ca, ra), (cb, rb) = _record(Path(a)), _record(Path(b))
    same = ca == cb and (ra is None or rb is None or ra == rb)
    if not same:
        raise UserError(
            f"{a} and {b} were exported from different models; compare exports of one model"
        )
