"""``sasq export --dtype fp16``: the exported step graph rewritten by ``fp16_pass`` in place,
saved the way it was (inline, or its weights in ``step.onnx.data``), checked again."""

from __future__ import annotations

from pathlib import Path

import onnx

from sasq.exporter.fp16_pass import Fp16Config, to_fp16
from sasq.exporter.manifest import GraphSpec


def save_graph(model: onnx.ModelProto, path: Path, external: str | None) -> None:
    """Save inline, or with the weights in ``external`` beside ``path``. onnx appends to an
    existing external-data file, so a stale one is removed first."""
    if external is None:
        onnx.save(model, str(path))
        return
    (path.parent / external).unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=True, location=external,
              all_tensors_to_one_file=True, size_threshold=1024)  # fmt: skip


def write_fp16_step(path: Path, spec: GraphSpec, check: bool = True) -> dict:
    """Rewrite the step graph at ``path`` (described by ``spec``) in fp16; return the report
    recorded in the manifest (what stayed fp32 and why, the I/O types)."""
    fp16, report = to_fp16(onnx.load(str(path)), Fp16Config())
    save_graph(fp16, path, spec.external_data)
    onnx.shape_inference.infer_shapes_path(str(path), check_type=True, strict_mode=True)
    if check:
        onnx.checker.check_model(str(path), full_check=True)
    return report.to_dict()
