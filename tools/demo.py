"""``make demo``: the whole chain on the embedded default model, written to one folder.

export -> calibrate -> quantize (when the Q/DQ writer is present) -> generate with each
backend -> compare tokens with PyTorch -> short bench -> ``report.md`` with image grids.
Every stage writes plain files into ``out`` so each can be inspected on its own.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from sasq.models import LoadedModel, load_model
from sasq.tools.generate import GenerateConfig, generate_many, make_backend
from sasq.tools.image_grid import save_grid, side_by_side
from sasq.tools.metrics import token_agreement


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Stages:
    """Runs named stages, timing each and collecting their results for the report."""

    def __init__(self) -> None:
        self.results: dict[str, dict] = {}

    def run(self, name: str, fn, *args, **kw):
        print(f"[demo] {name} ...", flush=True)
        t0 = time.perf_counter()
        value, summary = fn(*args, **kw)
        self.results[name] = summary | {"seconds": round(time.perf_counter() - t0, 2)}
        return value


def _grid(model: LoadedModel, backend_name: str, onnx_dir, labels, seed, out: Path, title: str):
    backend = make_backend(backend_name, model, onnx_dir)
    gen = generate_many(model.cfg, backend, GenerateConfig(labels, seed))
    save_grid(gen.img, out, labels=[str(c) for c in labels], nrow=8, title=title)
    return gen, {"grid": out.name}


def run_demo(out: Path, model_dir: str | None = None, per_class: int = 8, seed: int = 0) -> str:
    """Run every stage; return the markdown report (also written to ``out/report.md``)."""
    from sasq.calib.cache import save_cache
    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.exporter import export_model
    from sasq.tools.bench import BenchConfig, run_bench, to_markdown, write_report

    out.mkdir(parents=True, exist_ok=True)
    st = _Stages()
    model = load_model(model_dir)
    labels = tuple(c for c in range(model.var.num_classes) for _ in range(per_class))

    fp_dir = out / "onnx_fp"
    st.run("export", lambda: (export_model(model, fp_dir), {"folder": fp_dir.name}))
    calib = st.run("calibrate", _calibrate, calibrate, CalibConfig(progress=False), fp_dir)
    save_cache(calib.cache, out / "calib.json")

    fp, _ = _grid(model, "torch", None, labels, seed, out / "fp_torch.png", "FP32 (torch)")
    ort_fp = st.run(
        "generate ort fp32",
        _grid,
        model,
        "ort",
        fp_dir,
        labels,
        seed,
        out / "fp_ort.png",
        "FP32 (ONNX Runtime)",
    )
    st.results["generate ort fp32"]["token_agreement_vs_torch"] = token_agreement(
        fp.idx, ort_fp.idx
    )
    grids = [("FP32 torch", "fp_torch.png"), ("FP32 ONNX Runtime", "fp_ort.png")]

    q_dir = out / "onnx_int8"
    quantized = _quantize(calib, fp_dir, q_dir)
    backends = ("torch", "ort")
    if quantized is not None:
        st.results["quantize"] = quantized
        q = st.run(
            "generate ort int8",
            _grid,
            model,
            "ort",
            q_dir,
            labels,
            seed,
            out / "int8_ort.png",
            "int8 W8A8 (ONNX Runtime)",
        )
        st.results["generate ort int8"]["token_agreement_vs_fp"] = token_agreement(fp.idx, q.idx)
        side_by_side(out / "fp_torch.png", out / "int8_ort.png", out / "fp_vs_int8.png")
        grids.append(("FP vs int8", "fp_vs_int8.png"))

    bench_cfg = BenchConfig(backends=backends, batch_sizes=(1, 8), repeats=5, threads=1)
    bench = st.run("bench", lambda: (run_bench(model, fp_dir, bench_cfg), {}))
    write_report(bench, out)
    if model_dir is None:
        st.run("quality fp torch", _quality, model)
    _write(out / "summary.json", json.dumps(st.results, indent=2, default=str) + "\n")
    report = "\n".join(
        [
            "# sasq demo",
            "",
            f"Model: `{model.path}`; torch {torch.__version__}.",
            "",
            *[f"## {title}\n\n![{title}]({name})\n" for title, name in grids],
            "## Stages",
            "",
            "```json",
            json.dumps(st.results, indent=2, default=str),
            "```",
            "",
            "## Bench",
            "",
            to_markdown(bench),
            "",
        ]
    )
    _write(out / "report.md", report)
    return report


def _quality(model: LoadedModel):
    from sasq.tools.quality import GenQualityConfig, default_classifier, generation_quality

    backend = make_backend("torch", model)
    q = generation_quality(model, backend, default_classifier(), GenQualityConfig(per_class=20))
    return None, q


def _calibrate(calibrate, cfg, fp_dir: Path):
    r = calibrate(fp_dir, cfg)
    tv = {si: [round(a, 4), round(b, 4)] for si, (a, b) in r.tv_by_scale.items()}
    return r, {"tensors": len(r.cache.ranges), "tv_by_scale_sampled_vs_resampled": tv}


def _quantize(calib, fp_dir: Path, q_dir: Path) -> dict | None:
    """W8A8 Q/DQ export, when the Q/DQ writer is part of this build."""
    try:
        from sasq.exporter.quantize import QuantConfig, quantize
    except ImportError:
        return None
    quantize(fp_dir, calib.cache, QuantConfig(), q_dir)
    return {"folder": q_dir.name}
