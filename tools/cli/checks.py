"""What the CLI checks before a command starts its work: the output path, that the exports
and models a command combines are of one model, and that the request fits in memory.

Each raises a one-line ``UserError``; the work itself lives in the Python API."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from sasq.errors import UserError


def out_file(p: str) -> Path:
    """A file to write (PNG, JSON, plan), checked without creating anything: an existing
    folder of that name is refused (the file's temporary sibling would be left behind), and
    so is a name that can only be a folder (``out/``, ``out/.``: ``Path`` drops the trailing
    separator, and ``sasq generate --out out/`` once wrote a PNG named ``out``); the nearest
    existing folder above it must take a file. Writers create the missing folders when they
    write, so a command refused later leaves no empty folders behind."""
    path = Path(p)
    seps = tuple(s for s in (os.sep, os.altsep) if s)
    if p.endswith(seps) or os.path.basename(p) in (".", ".."):
        raise UserError(f"{p}: names a folder; --out needs a file name here")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; --out needs a file name here")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create output folder {parent}: {existing} is not a folder")
    try:  # a real write: os.access says yes to root, and on /proc or a read-only mount
        with tempfile.TemporaryFile(dir=existing):  # O_TMPFILE where it exists: no name left
            pass
    except OSError as e:
        raise UserError(f"cannot write files in {existing} ({e.strerror})") from None
    return path


def out_folder(p: str) -> Path:
    """A folder for reports (bench.json ...), checked like ``out_file`` (not created)."""
    return out_file(str(Path(p) / "report")).parent


def made_from(model, onnx_dir: str) -> None:
    """The export ``onnx_dir`` must have been made from ``model`` (``--model``)."""
    from sasq.exporter.provenance import require_made_from

    require_made_from(model, onnx_dir)


def check_compare_sources(args: argparse.Namespace) -> None:
    """``compare``'s two sides must run one model: two exports of it, or the model
    (``torch``, ``--model``) and its export."""
    from sasq.engines.backends import parse_spec
    from sasq.exporter.provenance import require_made_from, require_same_source
    from sasq.models import load_model

    specs = [parse_spec(s) for s in (args.a, args.b)]
    folders = [s.folder for s in specs if s.folder is not None]
    if len(folders) == 2:
        require_same_source(folders[0], folders[1])
    if folders and (any(s.kind == "torch" for s in specs) or args.model is not None):
        require_made_from(load_model(args.model), folders[0])


def require_generation_fits(onnx_dir: str, batch: int, flag: str) -> None:
    """Refuse a batch the export's model cannot generate in this machine's memory."""
    from sasq.exporter import verify
    from sasq.models import ModelConfig
    from sasq.models.memory import generation_estimate, require_fits

    cfg = ModelConfig.from_dict(verify(onnx_dir).model_config)
    require_fits(generation_estimate(cfg, batch), f"a batch of {batch}", f"lower {flag}")


def quant_of_export(onnx_path: Path) -> dict:
    """The ``extra.quant`` record of a quantized export beside ``onnx_path`` (its target,
    cache, and the GEMMs it kept float, and why), for the lint to apply its rules. A
    manifest.json that is not a sasq export's is none of ours ({}); a sasq export's must be
    valid (``UserError`` otherwise)."""
    from sasq.exporter.manifest import FORMAT, MANIFEST, MAX_MANIFEST_BYTES, load_manifest
    from sasq.untrusted import json_loads, read_capped

    path = onnx_path.parent / MANIFEST
    try:
        text = read_capped(path, "manifest", MAX_MANIFEST_BYTES) if path.is_file() else b"{}"
        ours = json_loads(text).get("format") == FORMAT
    except (ValueError, AttributeError, OSError, UserError):
        ours = False
    if not ours:
        return {}
    quant = load_manifest(onnx_path.parent).extra.get("quant", {})
    if not isinstance(quant, dict):
        raise UserError(f"{path}: extra.quant is not a map")
    kept = quant.get("kept_float", {})
    if not isinstance(kept, dict) or not all(isinstance(k, str) for k in kept):
        raise UserError(f"{path}: extra.quant.kept_float is not a map of node names")
    more = quant.get("step_graphs", {})  # e.g. step_long.onnx: its own float GEMMs too
    own = more.get(onnx_path.stem, {}) if isinstance(more, dict) else {}
    own_kept = own.get("kept_float", {}) if isinstance(own, dict) else {}
    if not isinstance(own_kept, dict) or not all(isinstance(k, str) for k in own_kept):
        raise UserError(f"{path}: extra.quant.step_graphs.{onnx_path.stem} is not a map")
    kept = {**kept, **own_kept}
    quant = {**quant, "kept_float": kept}
    if quant.get("target", "tensorrt") not in ("tensorrt", "ort"):
        raise UserError(f"{path}: extra.quant.target is not tensorrt or ort")
    if kept:
        print(f"using {len(kept)} float nodes from {path}")
    return quant
