"""``make demo``: the whole chain on the embedded default model, written to one folder.

export -> calibrate -> quantize (int8, int8 + shift-and-sum) -> generate with each backend
-> token agreement with PyTorch FP -> short eval (quality against FP, with the ORT peer)
-> short bench -> ``report.md`` with image grids. Every stage writes plain files into
``out`` so each can be inspected on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sasq import files, progress
from sasq.engines.backends import make_backend
from sasq.engines.config import GenerateConfig
from sasq.engines.generate import generate_many
from sasq.metrics import token_agreement
from sasq.models import LoadedModel, load_model
from sasq.tools.apps.demo_report import demo_report, demo_summary
from sasq.tools.report.image_grid import save_grid, side_by_side


class _Stages:
    """Runs named stages, timing each and keeping their summaries for the report."""

    def __init__(self) -> None:
        self.results: dict[str, dict] = {}

    def run(self, name: str, fn: Callable, *args):
        """``fn(*args)`` returns (value, summary dict); the summary gets the stage's time."""
        progress.stage(f"demo: {name}")
        t0 = time.perf_counter()
        value, summary = fn(*args)
        self.results[name] = summary | {"seconds": round(time.perf_counter() - t0, 2)}
        return value


def _grid(model: LoadedModel, onnx_dir, labels, seed, out: Path, title: str):
    backend = make_backend("torch" if onnx_dir is None else "ort", model, onnx_dir)
    gen = generate_many(model.cfg, backend, GenerateConfig(labels, seed))
    save_grid(gen.img, out, labels=[str(c) for c in labels], nrow=8, title=title)
    return gen, {"grid": out.name}


def _calibrate(fp_dir: Path):
    from sasq.calib.calibrate import CalibConfig, calibrate

    r = calibrate(fp_dir, CalibConfig())
    tv = {si: [round(a, 4), round(b, 4)] for si, (a, b) in r.tv_by_scale.items()}
    return r, {"tensors": len(r.cache.ranges), "tv_by_scale_sampled_vs_resampled": tv}


def _quantize(fp_dir: Path, cache, qc, out: Path):
    from sasq.exporter.quantize import quantize

    return quantize(fp_dir, cache, qc, out), {"settings": qc.to_dict()}


def run_demo(
    out: Path,
    model_dir: str | None = None,
    per_class: int = 8,
    seed: int = 0,
    threads: int | None = None,
) -> tuple[Path, str]:
    """Run every stage; write ``out/report.md``; return its path and a short summary.
    ``threads``: the bench's (None: ``bench.default_threads()``, half the logical cores)."""
    from sasq.exporter import export_model
    from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
    from sasq.quant.cache import save_cache
    from sasq.tools.measure.bench import run_bench
    from sasq.tools.measure.bench import write_report as write_bench
    from sasq.tools.measure.config import BenchConfig
    from sasq.tools.measure.steadiness import default_threads

    out.mkdir(parents=True, exist_ok=True)
    st = _Stages()
    model = load_model(model_dir)
    labels = tuple(c for c in range(model.var.num_classes) for _ in range(per_class))

    fp_dir = out / "onnx_fp"
    st.run("export", lambda: (export_model(model, fp_dir), {"folder": fp_dir.name}))
    calib = st.run("calibrate", _calibrate, fp_dir)
    save_cache(calib.cache, out / "calib.json")

    fp = st.run("generate torch fp32", _grid, model, None, labels, seed, out / "fp_torch.png",
                "FP32 (torch)")  # fmt: skip
    gens = {
        "ort fp32": st.run(
            "generate ort fp32",
            _grid,
            model,
            fp_dir,
            labels,
            seed,
            out / "fp_ort.png",
            "FP32 (ONNX Runtime)",
        )
    }
    int8 = {"int8": QuantConfig(), "int8-ss": QuantConfig(shift_sum=ShiftSumConfig(enabled=True))}
    titles = {"int8": "int8 W8A8, plain", "int8-ss": "int8 W8A8 + shift-and-sum"}
    for name, qc in int8.items():
        st.run(f"quantize {name}", _quantize, fp_dir, calib.cache, qc, out / f"onnx_{name}")
        gens[name] = st.run(
            f"generate {name}",
            _grid,
            model,
            out / f"onnx_{name}",
            labels,
            seed,
            out / f"{name}_ort.png",
            f"{titles[name]} (ONNX Runtime)",
        )
    for name, g in gens.items():
        st.results[f"generate {name}"]["token_agreement_vs_torch_fp"] = token_agreement(
            fp.idx, g.idx
        )
    side_by_side(
        out / "fp_torch.png",
        out / "int8-ss_ort.png",
        out / "fp_vs_int8.png",
        titles=None,  # each grid carries its own title
    )

    result = None
    if model_dir is None:  # the digits classifier scores the embedded model only
        from sasq.tools.quality.config import EvalConfig
        from sasq.tools.quality.evaluate import evaluate
        from sasq.tools.quality.evaluate import write_report as write_eval
        from sasq.tools.quality.scores import default_classifier

        ec = EvalConfig(
            per_class=30,
            bits=("W8A8",),
            rows=("peer-minmax", "plain", "resample", "shift-sum", "both"),
        )
        result = st.run("eval", lambda: (evaluate(model, default_classifier(), ec), {}))
        write_eval(result, out)

    specs = ("ort", "torch", *(f"{n}={out / f'onnx_{n}'}" for n in int8))
    bench_cfg = BenchConfig(
        backends=specs,
        batch_sizes=(1, 8, 32),
        repeats=5,
        threads=default_threads() if threads is None else threads,
    )
    bench = st.run("bench", lambda: (run_bench(model, fp_dir, bench_cfg), {}))
    write_bench(bench, out)

    files.write_json(out / "summary.json", st.results)
    report = demo_report(st.results, result, bench, str(model.path))
    path = files.write_text(out / "report.md", report)
    return path, demo_summary(st.results, result, bench, path)
