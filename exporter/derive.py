"""A derived export: a copy of an export folder whose step graph is replaced.

Quantized exports (sasq's Q/DQ writer, the ONNX Runtime peer) differ from their FP source
only in ``step.onnx``. The copy gets a fresh manifest (new sha256 of every file, the
source's step hash and the caller's notes under ``extra``) and is written under a temporary
name and renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import onnx

from sasq.errors import UserError
from sasq.exporter.export import graph_spec
from sasq.exporter.manifest import (
    CacheTensor,
    GraphSpec,
    file_entries,
    verify,
    write_manifest,
)
from sasq.exporter.out_swap import staged_export
from sasq.files import sha256_file


def save_like(model: onnx.ModelProto, path: Path, spec: GraphSpec) -> None:
    """Save like the FP graph was saved: inline, or with its weights in a file beside it."""
    if spec.external_data is None:
        onnx.save(model, str(path))
        return
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        location=spec.external_data,
        all_tensors_to_one_file=True,
        size_threshold=1024,
    )


def derive_export(
    src: str | Path,
    step: onnx.ModelProto,
    out_dir: str | Path,
    key: str,
    notes: dict[str, Any],
    cache: tuple[CacheTensor, ...] = (),
    more_steps: dict[str, onnx.ModelProto] | None = None,
    step_graphs: tuple[str, ...] | None = None,
) -> Path:
    """Copy export ``src`` to ``out_dir`` with ``step`` as its step graph; ``notes`` go to
    the new manifest's ``extra[key]`` (with ``source_step_sha256``). ``cache``: the state
    the new step carries between scales, when it differs from the source's (the int8 KV
    cache); the manifest then lists the new step's inputs and outputs too. ``more_steps``:
    further step graphs by key (saved as ``<key>.onnx``, like the step), ``step_graphs``
    the key each scale runs."""
    src, out_dir = Path(src), Path(out_dir)
    manifest = verify(src)
    if out_dir.resolve() == src.resolve():
        raise UserError(f"{out_dir}: a derived export must not replace its source")
    if src.resolve() in out_dir.resolve().parents:
        raise UserError(f"{out_dir}: a derived export must not be written inside its source")
    spec = manifest.graphs["step"]
    notes = {**notes, "source_step_sha256": sha256_file(src / spec.file)}
    with staged_export(out_dir) as tmp:
        skip = {spec.file, spec.external_data, "manifest.json"}
        for name in manifest.files:
            if name not in skip:
                shutil.copy2(src / name, tmp / name)
        save_like(step, tmp / spec.file, spec)
        graphs = dict(manifest.graphs)
        if cache:
            graphs["step"] = graph_spec(tmp / spec.file, spec.external_data)
        for name, model in (more_steps or {}).items():
            more = GraphSpec(f"{name}.onnx", (), (), spec.external_data and f"{name}.onnx.data")
            save_like(model, tmp / more.file, more)
            graphs[name] = graph_spec(tmp / more.file, more.external_data)
        scales = manifest.scales
        if step_graphs is not None:
            scales = tuple(dataclasses.replace(s, step_graph=g)
                           for s, g in zip(scales, step_graphs, strict=True))  # fmt: skip
        new = dataclasses.replace(
            manifest,
            files=file_entries(tmp),
            extra={**manifest.extra, key: notes},
            graphs=graphs,
            cache=cache or manifest.cache,
            scales=scales,
        )
        write_manifest(new, tmp)
    return out_dir
