"""Run one operation in a fresh process and print its peak RSS next to sasq's estimate.

    python tests/memory_probe.py OP CONFIG_JSON [BATCH]  # OP: build generate export+calibrate

The peak is the kernel's high-water mark of resident memory (VmHWM) after the operation
minus the resident memory just before it, with the mark reset first (``clear_refs`` 5), so
imports, the model built for the later operations and earlier work do not count: what is
left is what the operation itself needed, the quantity ``sasq.models.memory`` estimates.
Run in its own process so the test's own memory does not pollute it. Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import re
import sys
import tempfile
import warnings
from pathlib import Path

import torch


def _rss(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024


def _start() -> int:
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    return _rss("VmRSS")


def _tiny(cfg):
    """``cfg`` at two scales, one block, 64 wide, 128 codes: exported and calibrated in
    seconds, through the same code paths as ``cfg``."""
    from dataclasses import replace

    from sasq.models import build

    pn = (1, 2)
    vae = replace(cfg.vqvae, patch_nums=pn, vocab_size=128)  # > any top_k here
    var = replace(cfg.var, depth=1, embed_dim=64, num_heads=2, patch_nums=pn)
    return build(replace(cfg, vqvae=vae, var=var))


def main(op: str, cfg_json: str, batch: int) -> dict:
    from sasq.models import ModelConfig, build
    from sasq.models import memory as M

    torch.set_num_threads(1)
    cfg = ModelConfig.from_dict(json.loads(cfg_json))
    if op == "build":
        est = M.build_estimate(cfg)
        base = _start()
        model = build(cfg)
        return {"peak": _rss("VmHWM") - base, "est": est.total, "parts": est.parts}
    model = build(cfg)
    tmp = Path(tempfile.mkdtemp())
    if op == "generate":
        from sasq.engines.backends import make_backend
        from sasq.engines.config import GenerateConfig
        from sasq.engines.generate import generate_many

        backend = make_backend("torch", model)
        labels = tuple(i % cfg.var.num_classes for i in range(batch))
        generate_many(cfg, backend, GenerateConfig(labels[:1], 0, 1, progress=False))  # warm
        est = M.generation_estimate(cfg, batch, images=batch)
        base = _start()
        generate_many(cfg, backend, GenerateConfig(labels, 0, batch, progress=False))
    elif op == "export+calibrate":  # one export serves both measurements (CI time)
        from sasq.calib.calibrate import CalibConfig, calibrate
        from sasq.exporter import ExportConfig, export_model

        # the exporter's and ONNX Runtime's imports and first-use allocations, on a model
        # small enough to cost seconds (the same code paths as the config's: CI time)
        export_model(_tiny(cfg), tmp / "warm", ExportConfig(progress=False))
        est = M.export_estimate(cfg)
        base = _start()
        export_model(model, tmp / "e", ExportConfig(progress=False))
        exported = {"peak": _rss("VmHWM") - base, "est": est.total, "parts": est.parts}
        del model
        est = M.calibration_estimate(cfg, batch)
        warm = CalibConfig(num_samples=1, batch=1, threads=1, progress=False)
        cc = CalibConfig(num_samples=batch, batch=batch, threads=1, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "N samples cover only N of K classes"
            calibrate(tmp / "warm", warm)
            base = _start()
            calibrate(tmp / "e", cc)
        calibrated = {"peak": _rss("VmHWM") - base, "est": est.total, "parts": est.parts}
        return {"export": exported, "calibrate": calibrated}
    else:
        raise SystemExit(f"unknown operation {op}")
    return {"peak": _rss("VmHWM") - base, "est": est.total, "parts": est.parts}


if __name__ == "__main__":
    out = main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    print(json.dumps(out))
