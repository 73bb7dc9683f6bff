"""``sasq selftest --gpu``: TensorRT fp16 (and int8 when a Q/DQ writer is present) engines
of the embedded default model, token agreement with ONNX Runtime on the CPU, and a short
benchmark of the engines against each other."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sasq.engines.trt_engine import EngineConfig, build_engine, require_tensorrt
from sasq.models import load_model
from sasq.tools.compare import CompareConfig, compare_backends, to_markdown
from sasq.tools.generate import GenerateConfig, generate_many, make_backend


def _time_generation(cfg, backend, n: int = 8, repeats: int = 5) -> float:
    labels = tuple(i % cfg.var.num_classes for i in range(n))
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        generate_many(cfg, backend, GenerateConfig(labels, seed=r, batch=n))
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[repeats // 2]


def gpu_selftest(out: Path) -> int:
    require_tensorrt()  # one line and exit 2 where TensorRT or the GPU is missing
    from sasq.exporter import export_model

    out.mkdir(parents=True, exist_ok=True)
    model = load_model()
    fp = out / "onnx_fp"
    export_model(model, fp)
    folders = {"fp16": fp}
    try:
        from sasq.calib.calibrate import CalibConfig, calibrate
        from sasq.exporter.quantize import QuantConfig, quantize

        cache = calibrate(fp, CalibConfig(progress=False)).cache
        folders["int8"] = quantize(fp, cache, QuantConfig(), out / "onnx_int8")
    except ImportError:
        print("selftest: no Q/DQ writer in this build; int8 engine skipped")
    summary, ok = {}, True
    for name, folder in folders.items():
        plan = build_engine(folder, out / f"{name}.plan", EngineConfig(batch=8), rebuild=True)
        trt = make_backend("trt", None, folder, engine=plan)
        ref = make_backend("ort", None, folder)
        report = compare_backends(model.cfg, ref, trt, CompareConfig(n=8, atol=5e-2, rtol=5e-2))
        print(to_markdown(report))
        ok &= report["passed"]
        summary[name] = {"compare": report, "ms_per_batch8": 1e3 * _time_generation(model.cfg, trt)}
    if "int8" in summary:
        summary["int8_over_fp16_speedup"] = (
            summary["fp16"]["ms_per_batch8"] / summary["int8"]["ms_per_batch8"]
        )
    (out / "selftest.json").write_text(json.dumps(summary, indent=2, default=str))
    print(
        json.dumps(
            {
                k: v.get("ms_per_batch8", v) if isinstance(v, dict) else v
                for k, v in summary.items()
            },
            indent=2,
        )
    )
    print("selftest PASSED" if ok else "selftest FAILED")
    return 0 if ok else 1
