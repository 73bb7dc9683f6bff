"""Compare two backends scale by scale on the same inputs, as polygraphy's comparator does.

Backend A generates; backend B is teacher-forced with A's tokens, so at every scale both
see identical inputs and any difference in the logits is the backend's own. Per scale:
max / mean absolute error, max relative error, and a pass/fail against
|a - b| <= atol + rtol * |a| (elementwise). Also reported: how many tokens B would have
sampled differently from the same logits distribution (its own sampling, same seed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sasq.models import ModelConfig
from sasq.models.memory import Estimate, generation_estimate, require_fits
from sasq.tools import atomic
from sasq.tools.decode import StepBackend, generate
from sasq.tools.metrics import token_agreement


@dataclass(frozen=True)
class CompareConfig:
    n: int = 8
    seed: int = 0
    atol: float = 1e-4
    rtol: float = 1e-4


def _labels(cfg: ModelConfig, n: int) -> torch.Tensor:
    return torch.arange(n) % cfg.var.num_classes


def compare_backends(cfg: ModelConfig, a: StepBackend, b: StepBackend, cc: CompareConfig) -> dict:
    """Per-scale logits errors of b against a on a's tokens, plus free-running agreement."""
    L, V = sum(pn * pn for pn in cfg.var.patch_nums), cfg.vqvae.vocab_size
    kept = Estimate((("kept logits", 2 * 2 * cc.n * L * V * 4),))  # both sides, every scale
    require_fits(generation_estimate(cfg, cc.n) + kept, f"comparing {cc.n} samples", "lower --n")
    labels, pns, K = _labels(cfg, cc.n), tuple(cfg.var.patch_nums), cfg.var.num_classes
    ga = generate(a, labels, pns, cfg.sampling, cc.seed, K, keep_logits=True)
    forced = generate(
        b,
        labels,
        pns,
        cfg.sampling,
        cc.seed,
        K,
        keep_logits=True,
        hook=lambda si, idx, logits: ga.idx[si],
    )
    free = generate(b, labels, pns, cfg.sampling, cc.seed, K)
    scales = []
    for si, (la, lb) in enumerate(zip(ga.logits, forced.logits, strict=True)):
        diff = (la - lb).abs()
        rel = diff / la.abs().clamp_min(1e-6)
        ok = bool((diff <= cc.atol + cc.rtol * la.abs()).all())
        scales.append(
            {
                "scale": si,
                "pn": pns[si],
                "shape": list(la.shape),
                "max_abs": float(diff.max()),
                "mean_abs": float(diff.mean()),
                "max_rel": float(rel.max()),
                "passed": ok,
            }
        )
    img = (ga.img - forced.img).abs()
    return {
        "a": a.name,
        "b": b.name,
        "config": asdict(cc),
        "scales": scales,
        "image_max_abs": float(img.max()),
        "token_agreement_free_running": token_agreement(ga.idx, free.idx),
        "passed": all(s["passed"] for s in scales),
    }


def to_markdown(r: dict) -> str:
    c = r["config"]
    lines = [
        f"# compare {r['a']} vs {r['b']}",
        "",
        f"{c['n']} samples, seed {c['seed']}; pass: |a-b| <= {c['atol']} + {c['rtol']}*|a|",
        "",
        "| scale | pn | max abs | mean abs | max rel | result |",
        "|---|---|---|---|---|---|",
        *[
            f"| {s['scale']} | {s['pn']} | {s['max_abs']:.3g} | {s['mean_abs']:.3g} | "
            f"{s['max_rel']:.3g} | {'PASSED' if s['passed'] else 'FAILED'} |"
            for s in r["scales"]
        ],
        "",
        f"image max abs (forced tokens): {r['image_max_abs']:.3g}  ",
        "token agreement, free running: "
        + ", ".join(f"{a:.3f}" for a in r["token_agreement_free_running"]),
        "",
        f"**{'PASSED' if r['passed'] else 'FAILED'}**",
        "",
    ]
    if r.get("layer_sqnr_db"):
        lines += [
            "## SQNR of each quantized op's input (dB, same tokens)",
            "",
            "| tensor | SQNR |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v} |" for k, v in r["layer_sqnr_db"].items()]
        lines.append("")
    return "\n".join(lines)


def write_report(r: dict, out_dir: Path) -> tuple[Path, Path]:
    return atomic.write_report(r, out_dir, "compare", to_markdown)


def layer_sqnr(cfg: ModelConfig, fp_dir: Path, q_dir: Path, cc: CompareConfig) -> dict:
    """SQNR (dB) of every quantized op's input, int8 export against FP export, on the same
    tokens (the int8 run is teacher-forced with the FP run's tokens), pooled over scales.
    The tensors are the Q/DQ writer's inputs, which keep their FP names in both graphs."""
    import onnx

    from sasq.calib.recorder import quantizable_inputs
    from sasq.engines.ort_backend import OrtBackend
    from sasq.exporter.manifest import verify
    from sasq.tools.metrics import sqnr_db

    step = onnx.load(str(fp_dir / verify(fp_dir).graphs["step"].file), load_external_data=False)
    names = list(dict.fromkeys(a for t in quantizable_inputs(step) for a in t.activations))
    # The int8 cache reads K and V from the dequantized cache, not the FP tensors.
    aliases = verify(q_dir).extra.get("quant", {}).get("tensor_aliases", {})
    q_step = onnx.load(str(q_dir / verify(q_dir).graphs["step"].file), load_external_data=False)
    produced = {o for n in q_step.graph.node for o in n.output} | {
        i.name for i in q_step.graph.input
    }
    q_names = {n: aliases.get(n, n) for n in names if aliases.get(n, n) in produced}
    names = [n for n in names if n in q_names]
    seen: dict[str, dict[str, list]] = {"fp": {}, "q": {}}

    def keep(which: str):
        def on_record(si: int, rec: dict) -> None:
            for n in names:
                src = q_names[n] if which == "q" else n
                seen[which].setdefault(n, []).append(rec[src].ravel().astype("float64"))

        return on_record

    L, V = sum(pn * pn for pn in cfg.var.patch_nums), cfg.vqvae.vocab_size
    kept = Estimate((("kept logits", 2 * 2 * cc.n * L * V * 4),))  # both sides, every scale
    require_fits(generation_estimate(cfg, cc.n) + kept, f"comparing {cc.n} samples", "lower --n")
    labels, pns, K = _labels(cfg, cc.n), tuple(cfg.var.patch_nums), cfg.var.num_classes
    fp = generate(
        OrtBackend(fp_dir, record=names, on_record=keep("fp")),
        labels,
        pns,
        cfg.sampling,
        cc.seed,
        K,
    )
    generate(
        OrtBackend(q_dir, record=list(q_names.values()), on_record=keep("q")),
        labels,
        pns,
        cfg.sampling,
        cc.seed,
        K,
        hook=lambda si, idx, logits: fp.idx[si],
    )
    import numpy as np

    return {
        n: round(sqnr_db(np.concatenate(seen["fp"][n]), np.concatenate(seen["q"][n])), 2)
        for n in names
    }
