"""The GPU check: everything about sasq's TensorRT path that only a GPU machine can show.

    bash scripts/gpu_check.sh OUT        (or: .venv/bin/python scripts/gpu_check.py OUT)

Runs on a machine with an NVIDIA GPU in under 10 minutes and writes OUT/gpu_check.json:

1. the environment: GPU, driver, CUDA PyTorch, TensorRT, onnxruntime-gpu's providers,
   polygraphy, and which of sasq[gpu]'s packages are missing;
2. ``sasq selftest --gpu --simulate`` (the CI checks, here too) and ``sasq selftest
   --gpu`` (the same checks against real TensorRT engines);
3. for the embedded models (default, digits32) and a random VAR-d16: export, calibrate,
   quantize for the TensorRT target, build a plan per precision this build writes (fp32,
   int8; fp16 and fp8 where ``export --dtype`` / ``quantize --precision`` exist), and one
   ``sasq bench`` run timing every plan against ONNX Runtime's CUDA provider.

Each check runs as its own process with its own time limit: one failure does not stop the
rest, and its last lines land in the JSON. On a GPU machine without TensorRT or
onnxruntime-gpu (e.g. only CUDA PyTorch, no network to install more) the check says which
packages are missing, times what it can (torch and ONNX Runtime on the CPU), and exits 0.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
SASQ = [sys.executable, "-m", "sasq"]
BUDGET_S = 570  # under 10 minutes in all
RANGE = "1:8:16"
# sasq's own dependencies (modules): without them nothing of sasq can run here
CORE = ("torch", "onnx", "onnxruntime", "onnxscript", "onnx_ir", "polygraphy", "safetensors",
        "sklearn", "PIL", "matplotlib", "tqdm")  # fmt: skip


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def environment() -> dict:
    env: dict = {"python": sys.version.split()[0]}
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True)  # fmt: skip
        env["nvidia_smi"] = r.stdout.strip() or r.stderr.strip()
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.cuda.is_available()
        if env["torch_cuda"]:
            env["torch_gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        env["torch"] = None
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["ort_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"], env["ort_providers"] = None, []
    for pkg in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "polygraphy", "onnxruntime-gpu"):
        env[pkg] = _version(pkg)
    missing = [m for m in CORE if importlib.util.find_spec(m) is None]
    try:
        from sasq.engines.trt_device import gpu_count, gpu_name

        env["cuda_gpus"] = gpu_count()
        env["gpu"] = gpu_name() if env["cuda_gpus"] else None
    except ImportError as e:  # sasq or one of its dependencies is missing
        env["cuda_gpus"], env["gpu"] = 0, None
        missing.append(f"sasq ({e})")
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("tensorrt")
    if "CUDAExecutionProvider" not in env["ort_providers"]:
        missing.append("onnxruntime-gpu (CUDA provider)")
    if "TensorrtExecutionProvider" not in env["ort_providers"]:
        missing.append("onnxruntime-gpu (TensorRT provider)")
    env["missing"] = missing
    return env


class Runner:
    def __init__(self, out: Path):
        self.out, self.checks, self.t0 = out, [], time.monotonic()

    def left(self) -> float:
        return BUDGET_S - (time.monotonic() - self.t0)

    def run(self, name: str, argv: list[str], limit: float) -> bool:
        limit = min(limit, self.left())
        if limit < 10:
            self.checks.append({"name": name, "passed": False, "detail": "no time left"})
            return False
        t0 = time.monotonic()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
            rc, tail = r.returncode, (r.stdout + r.stderr)[-3000:]
        except subprocess.TimeoutExpired as e:
            rc, tail = "timeout", f"over {limit:.0f} s; " + str(e.stdout or "")[-2000:]
        ok = rc == 0
        self.checks.append({"name": name, "passed": ok, "rc": rc,
                            "s": round(time.monotonic() - t0, 1), "detail": tail})  # fmt: skip
        print(f"{'PASSED' if ok else 'FAILED'}  {name} ({self.checks[-1]['s']} s)", flush=True)
        return ok


def _supports(command: str, flag: str) -> bool:
    r = subprocess.run([*SASQ, command, "--help"], capture_output=True, text=True)
    return flag in r.stdout


def model_chain(run: Runner, name: str, model_args: list[str], have_trt: bool) -> None:
    """Export, calibrate, quantize, build every precision's plan, one bench run."""
    d = run.out / name
    fp, q = d / "onnx_fp32", d / "onnx_int8"
    if not run.run(f"{name}: export", [*SASQ, "export", *model_args, "--out", str(fp), "-q"], 180):
        return
    folders = {"fp32": fp}
    calib = [*SASQ, "calibrate", "--onnx", str(fp), "--n", "8", "--batch", "8",
             "--out", str(d / "calib.json"), "-q"]  # fmt: skip
    if run.run(f"{name}: calibrate", calib, 180):
        quant = [*SASQ, "quantize", "--onnx", str(fp), "--calib", str(d / "calib.json"),
                 "--target", "tensorrt", "--rest", "fp16", "-q"]  # fmt: skip
        if run.run(f"{name}: quantize int8", [*quant, "--out", str(q)], 120):
            folders["int8"] = q
        fp8 = [*quant, "--precision", "fp8", "--out", str(d / "onnx_fp8")]
        if _supports("quantize", "--precision") and run.run(f"{name}: quantize fp8", fp8, 120):
            folders["fp8"] = d / "onnx_fp8"
    if _supports("export", "--dtype") and run.run(
        f"{name}: export fp16",
        [*SASQ, "export", *model_args, "--dtype", "fp16", "--out", str(d / "onnx_fp16"), "-q"],
        180,
    ):
        folders["fp16"] = d / "onnx_fp16"
    rows = []
    if have_trt:
        for prec, folder in folders.items():
            plan = d / f"{prec}.plan"
            build = [*SASQ, "build", "--onnx", str(folder), "--out", str(plan),
                     "--batch-range", RANGE, "--rebuild", "-q"]  # fmt: skip
            if run.run(f"{name}: build {prec} plan", build, 240):
                rows.append(f"trt-{prec}={folder},{plan}")
    gpu_rows = [f"ort-cuda={fp}"] if "CUDAExecutionProvider" in _providers() else []
    # with no GPU rows, time what this machine can: torch and ONNX Runtime on the CPU
    backends = [*gpu_rows, *rows] if rows else ["torch", "ort", *gpu_rows]
    bench = [*SASQ, "bench", *model_args, "--onnx", str(fp), "--backends", ",".join(backends),
             "--batch-sizes", "1,8", "--repeats", "5", "--threads", "0",
             "--out", str(d / "bench"), "-q"]  # fmt: skip
    run.run(f"{name}: bench {', '.join(b.partition('=')[0] for b in backends)}", bench, 180)


def _providers() -> list[str]:
    try:
        import onnxruntime as ort

        return ort.get_available_providers()
    except ImportError:
        return []


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gpu_check.py OUT", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    print(json.dumps(env, indent=1), flush=True)
    have_trt = "tensorrt" not in env["missing"] and env["cuda_gpus"] > 0
    run = Runner(out)
    if any(m in CORE or m.startswith("sasq") for m in env["missing"]):
        return _write(out, env, run)  # nothing of sasq can run: say what is missing, exit 0
    sim = [*SASQ, "selftest", "--gpu", "--simulate", "--out", str(out / "selftest-sim")]
    run.run("selftest --gpu --simulate", sim, 120)
    if have_trt:
        run.run("selftest --gpu (TensorRT)",
                [*SASQ, "selftest", "--gpu", "--out", str(out / "selftest-gpu")], 180)  # fmt: skip
    model_chain(run, "default", ["--model", "default"], have_trt)
    # VAR-d16 before digits32: its step is where int8 and fp8 can show on a GPU
    d16 = out / "d16" / "model"
    if run.run("d16: random VAR-d16 weights",
               [sys.executable, str(HERE / "random_model.py"), "16", str(d16)], 120):  # fmt: skip
        model_chain(run, "d16", ["--model", str(d16)], have_trt)
    model_chain(run, "digits32", ["--model", "digits32"], have_trt)
    return _write(out, env, run)


def _write_text(path: Path, text: str) -> None:
    """sasq's atomic writer (``sasq/files.py``, standard library only), loaded from this
    checkout by path: the report is written even where sasq itself could not be installed."""
    spec = importlib.util.spec_from_file_location("_sasq_files", HERE.parent / "sasq" / "files.py")
    files = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(files)
    files.write_text(path, text)


def _write(out: Path, env: dict, run: Runner) -> int:
    report = {"environment": env, "checks": run.checks,
              "passed": sum(c["passed"] for c in run.checks), "total": len(run.checks),
              "seconds": round(time.monotonic() - run.t0, 1)}  # fmt: skip
    for sub in ("selftest-sim", "selftest-gpu"):
        p = out / sub / "selftest.json"
        if p.exists():
            report[sub] = json.loads(p.read_text())
    _write_text(out / "gpu_check.json", json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: {report['passed']}/{report['total']} checks passed; missing: "
          f"{', '.join(env['missing']) or 'nothing'}; wrote {out / 'gpu_check.json'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
