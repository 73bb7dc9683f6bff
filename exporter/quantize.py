"""``quantize()``: an FP export folder + its calibration cache -> a quantized export folder.

The result is a copy of the export whose ``step.onnx`` is the Q/DQ graph (``qdq_writer``,
with shift-and-sum attention expanded and, by default, fused); the other graphs are copied
unchanged. A fresh manifest lists the new sha256 of every file and records the settings
under ``extra["quant"]``, including the exact node names kept float, so a lint can check
the graph later: ``LintConfig(float_nodes=tuple(manifest.extra["quant"]["kept_float"]))``.
The folder is written under a temporary name and renamed into place, as ``export_model``
does, so a failure leaves nothing half-written.

    cache = load_cache("calib.json")
    quantize("out/fp", cache, QuantConfig(shift_sum=ShiftSumConfig(enabled=True)), "out/int8")
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import onnx

from sasq.calib.cache import CalibCache
from sasq.exporter.export import _check_target, _install
from sasq.exporter.fuse_shift_sum import fuse_shift_sum
from sasq.exporter.manifest import GraphSpec, file_entries, sha256_file, verify, write_manifest
from sasq.exporter.qdq_config import QuantConfig
from sasq.exporter.qdq_per_step import StepKey
from sasq.exporter.qdq_writer import QdqReport, write_qdq
from sasq.tools.errors import UserError


def quantize_step(
    model: onnx.ModelProto, cache: CalibCache, cfg: QuantConfig, key: StepKey | None = None
) -> tuple[onnx.ModelProto, QdqReport]:
    """The Q/DQ step graph (fused shift-and-sum if configured) and the writer's report."""
    q, report = write_qdq(model, cache, cfg, key)
    if cfg.shift_sum.enabled and cfg.shift_sum.fuse:
        q = fuse_shift_sum(q)
    return q, report


def _save(model: onnx.ModelProto, path: Path, spec: GraphSpec) -> None:
    """Save like the FP graph was saved: inline, or with its weights in a file beside it."""
    if spec.external_data is None:
        onnx.save(model, str(path))
        return
    onnx.save(model, str(path), save_as_external_data=True, location=spec.external_data,
              all_tensors_to_one_file=True, size_threshold=1024)  # fmt: skip


def quantize(
    onnx_dir: str | Path, cache: CalibCache, cfg: QuantConfig, out_dir: str | Path
) -> Path:
    """Write the quantized copy of the export ``onnx_dir`` to ``out_dir``; return it.

    Refuses (``UserError``, one line) a cache made for another step graph, an export that
    fails its manifest check, and an ``out_dir`` that is the source or a non-export folder.
    """
    src, out_dir = Path(onnx_dir), Path(out_dir)
    manifest = verify(src)
    if out_dir.resolve() == src.resolve():
        raise UserError(f"{out_dir}: the quantized export must not replace its FP source")
    spec = manifest.graphs["step"]
    step_hash = sha256_file(src / spec.file)
    if cache.model_hash != step_hash:
        raise UserError(
            f"calibration cache is for another step graph (sha256 {cache.model_hash[:12]}..., "
            f"{src / spec.file} is {step_hash[:12]}...); recalibrate"
        )
    _check_target(out_dir)
    model = onnx.load(str(src / spec.file))
    # the step is found from the KV cache length (past_key_0 [B2, H, P, D]), unique per scale
    key = StepKey("past_key_0", 2, tuple(s.past_len for s in manifest.scales))
    q, report = quantize_step(model, cache, cfg, key)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)
        skip = {spec.file, spec.external_data, "manifest.json"}
        for name in manifest.files:
            if name not in skip:
                shutil.copy2(src / name, tmp / name)
        _save(q, tmp / spec.file, spec)
        quant = {
            **cfg.to_dict(),
            "source_step_sha256": step_hash,
            "quantized": report.quantized,
            "kept_float": report.kept_float,
            "shift_sum_extra_keys": report.shift_sum,
            "calib_settings": {
                "observer": cache.settings.observer.value,
                "num_samples": cache.settings.num_samples,
                "resample": cache.settings.resample.value,
            },
        }
        new = dataclasses.replace(
            manifest, files=file_entries(tmp), extra={**manifest.extra, "quant": quant}
        )
        write_manifest(new, tmp)
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
