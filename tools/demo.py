"""``make demo``: the whole chain on the embedded default model, written to one folder.

Stages run so far: PyTorch generation of every class to a labelled grid, and the quality
of the embedded model on the digits classifier. Later stages (export, calibrate, quantize,
int8 generation, bench, eval) append to the same report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from sasq.models import load_model
from sasq.tools.generate import GenerateConfig, generate_many, make_backend
from sasq.tools.image_grid import save_grid


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_demo(out: Path, model_dir: str | None = None, per_class: int = 8, seed: int = 0) -> str:
    """Run every stage; return the markdown report (also written to ``out/report.md``)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_model(model_dir)
    K = model.var.num_classes
    labels = tuple(c for c in range(K) for _ in range(per_class))
    gen = generate_many(model.cfg, make_backend("torch", model), GenerateConfig(labels, seed))
    grid = save_grid(
        gen.img,
        out / "fp_torch.png",
        labels=[str(c) for c in labels],
        nrow=per_class,
        title=f"FP (torch), seed {seed}",
    )
    summary = {"generate_torch_seconds": round(time.perf_counter() - t0, 2), "grid": grid.name}
    if model_dir is None:
        from sasq.tools.quality import GenQualityConfig, default_classifier, generation_quality

        clf = default_classifier()
        t1 = time.perf_counter()
        q = generation_quality(
            model, make_backend("torch", model), clf, GenQualityConfig(per_class=20)
        )
        summary["quality_fp_torch"] = q | {"seconds": round(time.perf_counter() - t1, 2)}
    _write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    report = "\n".join(
        [
            "# sasq demo",
            "",
            f"Model: {model.path}  ",
            f"Torch {torch.__version__}",
            "",
            f"![FP grid]({grid.name})",
            "",
            "```json",
            json.dumps(summary, indent=2),
            "```",
            "",
        ]
    )
    _write(out / "report.md", report)
    return report
