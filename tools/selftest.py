"""``sasq selftest``: the chain on the embedded default model, checked where this machine
can check it.

Without ``--gpu`` (``cpu_selftest``): export, ONNX Runtime FP32 against PyTorch (same
tokens, logits within 1e-4), calibrate, quantize to int8, the lint of the quantized step,
and int8 against FP by ``sasq compare``'s quantized verdict; the GPU checks are reported as
skipped, with why. With ``--gpu`` (``gpu_selftest``): TensorRT fp16 and int8 engines of
the default model, token agreement with ONNX Runtime on the CPU, and a short benchmark of
the engines against each other."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sasq.engines.generate import GenerateConfig, generate_many, make_backend
from sasq.engines.trt_engine import EngineConfig, build_engine, require_tensorrt
from sasq.models import load_model
from sasq.tools.compare import CompareConfig, compare_backends, to_markdown


def _time_generation(cfg, backend, n: int = 8, repeats: int = 5) -> float:
    labels = tuple(i % cfg.var.num_classes for i in range(n))
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        generate_many(cfg, backend, GenerateConfig(labels, seed=r, batch=n))
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[repeats // 2]


def gpu_skip_reason() -> str:
    """Why the GPU checks cannot run here, or "" when TensorRT and a GPU are present."""
    from sasq.engines.trt_engine import GpuUnavailableError

    try:
        require_tensorrt()
    except GpuUnavailableError as e:
        return str(e)
    return ""


def _check(results: list[dict], name: str, fn) -> object:
    """Run one check; record PASSED/FAILED (an exception fails it with its one line)."""
    t0 = time.perf_counter()
    try:
        value, ok, detail = fn()
    except Exception as e:  # a selftest reports every failure rather than stopping at one
        value, ok, detail = None, False, f"{type(e).__name__}: {' '.join(str(e).split())}"
    results.append(
        {"check": name, "passed": ok, "detail": detail, "s": round(time.perf_counter() - t0, 1)}
    )
    print(f"{'PASSED' if ok else 'FAILED'}  {name}: {detail}", flush=True)
    return value if ok else None


def cpu_selftest(out: Path, gpu_asked: bool = False) -> int:
    """The CPU checks (module docstring); 0 when all pass. Writes ``selftest.json``."""
    from sasq.calib.cache import save_cache
    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.engines.lint import config_for_export, lint
    from sasq.exporter import export_model, verify
    from sasq.exporter.qdq_config import QuantConfig
    from sasq.exporter.quantize import quantize
    from sasq.tools.compare import describe_side, judge

    out.mkdir(parents=True, exist_ok=True)
    model = load_model()
    results: list[dict] = []

    def export():
        fp = out / "onnx_fp"
        export_model(model, fp)
        files = len(verify(fp).files)
        return fp, True, f"{files} files, manifest hashes verified"

    fp = _check(results, "export (default model -> ONNX)", export)

    def ort_matches_torch():
        r = compare_backends(
            model.cfg, make_backend("torch", model), make_backend("ort", None, fp), CompareConfig()
        )
        worst = max(s["max_abs"] for s in r["scales"])
        same = all(a == 1.0 for a in r["token_agreement_free_running"])
        return r, r["passed"] and same, f"max |logits diff| {worst:.2g}, same tokens: {same}"

    def calib():
        cache = calibrate(fp, CalibConfig(num_samples=16, batch=16, progress=False)).cache
        save_cache(cache, out / "calib.json")
        return cache, True, f"{len(cache.ranges)} tensor ranges"

    def quant(cache):
        q = quantize(fp, cache, QuantConfig(), out / "onnx_int8")
        return q, True, f"{len(verify(q).extra['quant']['quantized'])} MatMuls in int8"

    def lint_int8(q):
        manifest = verify(q)
        cfg = config_for_export(manifest.extra["quant"])
        bad = lint(q / manifest.graphs["step"].file, cfg)
        return bad, not bad, f"{len(bad)} violations of the {cfg.target.value} rules"

    def int8_vs_fp(q):
        sides = [describe_side(f"ort={fp}"), describe_side(f"ort={q}")]
        cc = CompareConfig()
        r = compare_backends(
            model.cfg, make_backend("ort", None, fp), make_backend("ort", None, q), cc
        )
        judge(r, sides, model.cfg, cc)
        v = r["verdict"]
        worst = ", ".join(f"{n} {d:.1f} dB" for n, d in v["worst_layers"])
        detail = "; ".join(v["failures"]) or f"tokens {v['token_agreement']:.3f}, lowest {worst}"
        return r, r["passed"], detail

    if fp is not None:
        _check(results, "ONNX Runtime FP32 = PyTorch", ort_matches_torch)
        cache = _check(results, "calibrate (16 images)", calib)
        q = _check(results, "quantize W8A8", lambda: quant(cache)) if cache else None
        if q is not None:
            _check(results, "lint of the int8 step", lambda: lint_int8(q))
            _check(results, "int8 vs FP (compare's quantized verdict)", lambda: int8_vs_fp(q))
    why = gpu_skip_reason()
    skipped = (
        "--gpu not given" + (f"; and here: {why}" if why else " (TensorRT and a GPU are present)")
        if not gpu_asked
        else why
    )
    print(f"SKIPPED GPU checks (TensorRT fp16/int8 engines vs ONNX Runtime): {skipped}")
    ok = len(results) == 6 and all(r["passed"] for r in results)
    (out / "selftest.json").write_text(
        json.dumps({"cpu": results, "gpu_skipped": skipped, "passed": ok}, indent=2)
    )
    print(f"selftest {'PASSED' if ok else 'FAILED'} (CPU checks; GPU checks skipped)")
    return 0 if ok else 1


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
