"""``sasq selftest``: the chain on the embedded default model, checked where this machine
can check it.

Without ``--gpu`` (``cpu_selftest``): export, ONNX Runtime FP32 against PyTorch (same
tokens, logits within 1e-4), calibrate, quantize to int8, the lint of the quantized step,
and int8 against FP by ``sasq compare``'s quantized verdict; the GPU checks are reported as
skipped, with why. With ``--gpu`` (``tools.gpu_selftest``): the TensorRT engine checks, on a
GPU or (``--simulate``) on the contract simulator."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sasq.engines.backends import make_backend
from sasq.engines.trt_engine import require_tensorrt
from sasq.models import load_model
from sasq.tools.quality.compare import compare_backends
from sasq.tools.quality.config import CompareConfig


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
    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.engines.lint import config_for_export, lint
    from sasq.exporter import export_model, verify
    from sasq.exporter.qdq_config import QuantConfig
    from sasq.exporter.quantize import quantize
    from sasq.quant.cache import save_cache
    from sasq.tools.quality.compare import describe_side, judge

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
    print(f"SKIPPED GPU checks (TensorRT engines vs ONNX Runtime; on any machine: "
          f"sasq selftest --gpu --simulate): {skipped}")  # fmt: skip
    ok = len(results) == 6 and all(r["passed"] for r in results)
    (out / "selftest.json").write_text(
        json.dumps({"cpu": results, "gpu_skipped": skipped, "passed": ok}, indent=2)
    )
    print(f"selftest {'PASSED' if ok else 'FAILED'} (CPU checks; GPU checks skipped)")
    return 0 if ok else 1
