"""``sasq selftest --gpu [--simulate]``: the TensorRT path on the embedded default model.

The same checks run against real TensorRT engines on a GPU, or, with ``--simulate``,
against the contract simulator (``engines.trt_sim``: TensorRT's I/O rules over ONNX
Runtime's CPU math) on any machine, which is how CI runs them. For every precision the
export offers (FP32; fp16 with the casts sasq writes; int8 and fp8 Q/DQ for TensorRT with
an fp16 rest):

1. build a plan over a batch range (``--batch-range 1:2:4``);
2. two generations in a row on one backend, tokens against ONNX Runtime on the CPU
   running the same graph (the cache carried across steps and generations);
3. a batch at each end and in the middle of the range, tokens against ONNX Runtime;
4. a batch outside the range is refused in one line;

and once: a plan built from another export is refused at load. Simulated, the tokens must
be equal (same math); on a GPU, TensorRT's kernels round differently, so a check passes
when token agreement reaches ``REAL_AGREEMENT``. Each check is recorded in
``selftest.json`` as ``{name, passed, detail}``; one failure does not stop the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sasq.engines.backends import make_backend
from sasq.engines.config import GenerateConfig
from sasq.engines.generate import generate_many
from sasq.engines.trt_engine import EngineConfig, build_engine, runtime_identity
from sasq.engines.trt_plan import BatchRange
from sasq.errors import UserError
from sasq.models import load_model

RANGE = BatchRange(1, 2, 4)
REAL_AGREEMENT = 0.9  # token agreement with ORT on the CPU, same graph, on a real GPU


class Checks:
    """Runs checks one by one, recording PASSED/FAILED with a one-line detail."""

    def __init__(self):
        self.results: list[dict] = []

    def run(self, name: str, fn: Callable[[], tuple[object, bool, str]]) -> object:
        t0 = time.perf_counter()
        try:
            value, ok, detail = fn()
        except Exception as e:  # a selftest reports every failure rather than stopping at one
            value, ok, detail = None, False, f"{type(e).__name__}: {' '.join(str(e).split())}"
        self.results.append({"name": name, "passed": ok, "detail": detail,
                             "s": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(f"{'PASSED' if ok else 'FAILED'}  {name}: {detail}", flush=True)
        return value if ok else None

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r["passed"] for r in self.results)


def _agreement(a, b) -> float:
    same = sum(int((x == y).sum()) for x, y in zip(a.idx, b.idx, strict=True))
    return same / sum(x.numel() for x in a.idx)


def _exports(out: Path, model, checks: Checks) -> dict[str, Path]:
    """precision -> export folder, for every precision this build can write."""
    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.exporter import ExportConfig, export_model
    from sasq.exporter.qdq_config import Precision, QuantConfig, RestDtype, Target
    from sasq.exporter.quantize import quantize

    folders: dict[str, Path] = {}

    def export(dtype: str):
        export_model(model, out / f"onnx_{dtype}", ExportConfig(dtype=dtype))
        return out / f"onnx_{dtype}", True, f"default model exported, step in {dtype}"

    if (fp := checks.run("export FP32", lambda: export("fp32"))) is None:
        return folders
    folders["fp32"] = fp
    if f16 := checks.run("export fp16 (sasq writes the casts)", lambda: export("fp16")):
        folders["fp16"] = f16
    calib_cfg = CalibConfig(num_samples=16, batch=16, progress=False)
    cache = checks.run("calibrate", lambda: (calibrate(fp, calib_cfg).cache, True, "16 images"))
    if cache is None:
        return folders
    for name, precision in (("int8", Precision.INT8), ("fp8", Precision.FP8)):
        qc = QuantConfig(target=Target.TENSORRT, precision=precision, rest=RestDtype.FP16)

        def q(qc=qc, name=name):
            folder = quantize(fp, cache, qc, out / f"onnx_{name}")
            return folder, True, f"--target tensorrt --precision {name} --rest fp16"

        if (folder := checks.run(f"quantize {name}", q)) is not None:
            folders[name] = folder
    return folders


def _precision_checks(checks: Checks, name: str, folder: Path, plan: Path, model, sim: bool):
    cfg = EngineConfig(batch=RANGE, simulate=sim)
    if checks.run(f"{name}: build plan {RANGE}", lambda: (
            build_engine(folder, plan, cfg, rebuild=True), True,
            f"strongly typed, {'simulated' if sim else 'TensorRT'}")) is None:  # fmt: skip
        return
    want = 1.0 if sim else REAL_AGREEMENT
    trt = make_backend("trt", None, folder, engine=plan)
    ref = make_backend("ort", None, folder)
    K = model.cfg.var.num_classes

    def tokens(batch: int, seed: int) -> float:
        gc = GenerateConfig(tuple(i % K for i in range(batch)), seed=seed, batch=batch)
        return _agreement(generate_many(model, ref, gc), generate_many(model, trt, gc))

    def twice():
        agree = [tokens(RANGE.opt, seed) for seed in (0, 1)]
        return agree, min(agree) >= want, f"token agreement {agree} (needs >= {want})"

    def batches():
        agree = {b: tokens(b, 2) for b in (RANGE.min, RANGE.opt, RANGE.max)}
        return agree, min(agree.values()) >= want, f"token agreement by batch {agree}"

    def outside():
        try:
            tokens(RANGE.max + 1, 3)
        except UserError as e:
            one = "\n" not in str(e) and f"batches of {RANGE.min}..{RANGE.max}" in str(e)
            return None, one, f"refused: {e}"
        return None, False, f"batch {RANGE.max + 1} ran outside the plan's profiles"

    checks.run(f"{name}: two generations in a row = ONNX Runtime", twice)
    checks.run(f"{name}: batches {RANGE.min}, {RANGE.opt}, {RANGE.max} = ONNX Runtime", batches)
    checks.run(f"{name}: batch {RANGE.max + 1} refused in one line", outside)


def gpu_selftest(out: Path, simulate: bool = False) -> int:
    """The checks of the module docstring; 0 when all pass. Writes ``selftest.json``."""
    trt_version, gpu = runtime_identity(simulate)  # one line, exit 2 without TensorRT/GPU
    out.mkdir(parents=True, exist_ok=True)
    model = load_model()
    checks = Checks()
    folders = _exports(out, model, checks)
    plans = {}
    for name, folder in folders.items():
        plans[name] = out / f"{name}.plan"
        _precision_checks(checks, name, folder, plans[name], model, simulate)
    if {"fp32", "int8"} <= set(folders) and all(p.exists() for p in plans.values()):

        def foreign():
            try:
                make_backend("trt", None, folders["int8"], engine=plans["fp32"])
            except UserError as e:
                return None, "built from another" in str(e), f"refused: {e}"
            return None, False, "an FP32 plan loaded for the int8 export"

        checks.run("a plan from another export is refused", foreign)
    report = {
        "mode": "simulated" if simulate else "tensorrt",
        "tensorrt": trt_version,
        "gpu": gpu,
        "torch": torch.__version__,
        "checks": checks.results,
        "passed": checks.passed,
    }
    tmp = out / "selftest.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out / "selftest.json")
    n_ok = sum(r["passed"] for r in checks.results)
    print(f"selftest {'PASSED' if checks.passed else 'FAILED'} ({report['mode']}: "
          f"{n_ok}/{len(checks.results)} checks)")  # fmt: skip
    return 0 if checks.passed else 1
