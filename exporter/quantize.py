"""``quantize()``: an FP export folder + its calibration cache -> a quantized export folder.

The result is a copy of the export whose ``step.onnx`` is the Q/DQ graph (``qdq_writer``,
with shift-and-sum attention expanded and, by default, fused); the other graphs are copied
unchanged. A fresh manifest lists the new sha256 of every file and records the settings
under ``extra["quant"]``, including the exact node names kept float, so a lint can check
the graph later: ``LintConfig(float_nodes=tuple(manifest.extra["quant"]["kept_float"]))``.
``derive_export`` writes the folder under a temporary name and renames it into place, so a
failure leaves nothing half-written.

    cache = load_cache("calib.json")
    quantize("out/fp", cache, QuantConfig(shift_sum=ShiftSumConfig(enabled=True)), "out/int8")
"""

from __future__ import annotations

from pathlib import Path

import onnx

from sasq.calib.cache import CalibCache
from sasq.exporter.derive import derive_export
from sasq.exporter.finite_weights import check_initializers_finite
from sasq.exporter.fuse_shift_sum import fuse_shift_sum
from sasq.exporter.manifest import sha256_file, verify
from sasq.exporter.qdq_config import QuantConfig
from sasq.exporter.qdq_per_step import StepKey
from sasq.exporter.qdq_writer import QdqReport, write_qdq
from sasq.tools.errors import UserError


def quantize_step(
    model: onnx.ModelProto,
    cache: CalibCache,
    cfg: QuantConfig,
    key: StepKey | None = None,
    in_place: bool = False,
) -> tuple[onnx.ModelProto, QdqReport]:
    """The Q/DQ step graph (fused shift-and-sum if configured) and the writer's report."""
    q, report = write_qdq(model, cache, cfg, key, in_place=in_place)
    if cfg.shift_sum.enabled and cfg.shift_sum.fuse:
        q = fuse_shift_sum(q)
    return q, report


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
    model = onnx.load(str(src / spec.file))
    check_initializers_finite(model, src / spec.file)
    # the step is found from the KV cache length (past_key_0 [B2, H, P, D]), unique per scale
    key = StepKey("past_key_0", 2, tuple(s.past_len for s in manifest.scales))
    q, report = quantize_step(model, cache, cfg, key, in_place=True)  # loaded just for this
    quant = {
        **cfg.to_dict(),
        "quantized": report.quantized,
        "kept_float": report.kept_float,
        "shift_sum_extra_keys": report.shift_sum,
        "calib_settings": {
            "observer": cache.settings.observer.value,
            "num_samples": cache.settings.num_samples,
            "resample": cache.settings.resample.value,
        },
    }
    return derive_export(src, q, out_dir, "quant", quant)
