"""Compare two backends scale by scale on the same inputs, as polygraphy's comparator does.

Backend A generates; backend B is teacher-forced with A's tokens, so at every scale both
see identical inputs and any difference in the logits is the backend's own. Per scale:
max / mean absolute error, max relative error, the logits' SQNR, and the share of tokens B
draws from its own logits (same generator, A's context) equal to A's
(``token_agreement_forced``); also how many tokens B samples differently when it runs free.

The verdict depends on what is compared:

- FP against FP (torch, an FP export, another runtime): exact, |a - b| <= atol + rtol * |a|
  elementwise at every scale.
- A quantized export on either side (its manifest has ``extra.quant``): quantization is
  meant to move the logits, so a tolerance of 1e-4 would call every healthy int8 export
  broken. It is judged by what quantization should keep (``judge_quantized``): the
  teacher-forced token agreement pooled over every compared token, and, when the other side
  is the FP export it was quantized from, the SQNR of every quantized op's output
  (``layer_sqnr``), against floors that depend on the narrowest bit width (``FLOORS``).
  A failure names the worst layers by their model name (``blocks.1.ffn.fc2``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sasq.engines.backends import BackendSpec
from sasq.engines.decode import StepBackend, generate
from sasq.metrics import sqnr_db, token_agreement
from sasq.models import ModelConfig
from sasq.models.memory import Estimate, generation_estimate, require_fits
from sasq.tools.quality.config import CompareConfig
from sasq.tools.report import json_md
from sasq.tools.report.int8_record import backend_record, cpu_record, report_lines


@dataclass(frozen=True)
class QuantFloors:
    """What a healthy quantized export keeps: every measured layer's output SQNR (dB, on
    the FP run's tokens) and the teacher-forced token agreement pooled over all tokens."""

    sqnr_db: float
    token_agreement: float


# Floors by the narrowest of the weight, activation and KV-cache widths. Measured on the
# embedded default model (8 samples, seed 0, entropy calibration of 16 images; README,
# "compare"; scripts/compare_floors.py, the ort target's bounded u8 x s8 form): healthy
# exports' lowest layer SQNR / pooled agreement were W8A8 22.5 dB / 0.92 (full 8-bit form
# 22.8 / 0.91), W6A6 16.3 / 0.78, W4A8 13.6 / 0.70, W4A6 12.3 / 0.68, W8A8 with a 4-bit cache
# 13.9 / 0.82; broken W8A8 ones: one tensor's range x100 5.3 dB / 0.62, /100 0.3 dB / 0.47,
# every range x100 -2.0 dB / 0.06. digits32 W8A8: 17.3 dB / 0.91. Each SQNR floor sits ~6 dB
# (a bit) or more under the healthy minimum; a range 10x too wide (20.1 dB) passes.
FLOORS: dict[int, QuantFloors] = {
    8: QuantFloors(sqnr_db=15.0, token_agreement=0.75),
    6: QuantFloors(sqnr_db=10.0, token_agreement=0.60),
    4: QuantFloors(sqnr_db=6.0, token_agreement=0.45),
}
WORST_SHOWN = 3


def floors_for(bits: int) -> QuantFloors:
    """The floors of the widest entry at most ``bits`` (7 -> 6's; below 4: 4's)."""
    fits = [b for b in FLOORS if b <= bits]
    return FLOORS[max(fits) if fits else min(FLOORS)]


def _labels(cfg: ModelConfig, n: int) -> torch.Tensor:
    return torch.arange(n) % cfg.var.num_classes


def _require_fits(cfg: ModelConfig, cc: CompareConfig) -> None:
    L, V = sum(pn * pn for pn in cfg.var.patch_nums), cfg.vqvae.vocab_size
    kept = Estimate((("kept logits", 2 * 2 * cc.n * L * V * 4),))  # both sides, every scale
    require_fits(generation_estimate(cfg, cc.n) + kept, f"comparing {cc.n} samples", "lower --n")


def compare_backends(cfg: ModelConfig, a: StepBackend, b: StepBackend, cc: CompareConfig) -> dict:
    """Per-scale logits errors of b against a on a's tokens, plus token agreement (forced
    and free running). ``within_tolerance`` (per scale and overall): |a - b| <= atol +
    rtol * |a|; ``passed``: within it at every scale, the verdict on FP against FP
    (``judge`` replaces it where a side is quantized)."""
    _require_fits(cfg, cc)
    labels, pns, K = _labels(cfg, cc.n), tuple(cfg.var.patch_nums), cfg.var.num_classes
    ga = generate(a, labels, pns, cfg.sampling, cc.seed, K, keep_logits=True)
    agree: list[int] = []

    def force(si: int, idx: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        agree.append(int((idx == ga.idx[si]).sum()))  # b's own draw from a's context
        return ga.idx[si]

    forced = generate(b, labels, pns, cfg.sampling, cc.seed, K, keep_logits=True, hook=force)
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
                "logit_sqnr_db": round(sqnr_db(la.numpy(), lb.numpy()), 2),
                "token_agreement_forced": agree[si] / ga.idx[si].numel(),
                "within_tolerance": ok,
            }
        )
    img = (ga.img - forced.img).abs()
    tokens = sum(t.numel() for t in ga.idx)
    return {
        "a": a.name,
        "b": b.name,
        "config": asdict(cc),
        "scales": scales,
        "image_max_abs": float(img.max()),
        "token_agreement_forced": sum(agree) / tokens,
        "token_agreement_free_running": token_agreement(ga.idx, free.idx),
        # the int8 kernels each side ran and why (ORT's int8 numbers depend on the CPU)
        "int8": {"cpu": cpu_record(), "a": backend_record(a), "b": backend_record(b)},
        "within_tolerance": all(s["within_tolerance"] for s in scales),
        "passed": all(s["within_tolerance"] for s in scales),
    }


def judge_quantized(
    report: dict, bits: int, label: str, layers: dict[str, float] | None, why_no_layers: str = ""
) -> dict:
    """The verdict on a quantized side (see the module docstring); sets ``report["passed"]``
    and ``report["verdict"]``. ``layers``: output SQNR (dB) by model name, graph order."""
    f = floors_for(bits)
    failures = []
    agreement = report["token_agreement_forced"]
    if agreement < f.token_agreement:
        failures.append(f"token agreement {agreement:.3f} < {f.token_agreement}")
    worst: list[list] = []
    if layers:
        worst = [[n, v] for n, v in sorted(layers.items(), key=lambda kv: kv[1])[:WORST_SHOWN]]
        below = [n for n, v in layers.items() if not v >= f.sqnr_db]  # NaN fails too
        if below:
            failures.append(
                f"{len(below)} of {len(layers)} layers under {f.sqnr_db:g} dB SQNR, first "
                f"{below[0]}; worst " + ", ".join(f"{n} {v:.1f} dB" for n, v in worst)
            )
    report["verdict"] = {
        "mode": "quantized",
        "bits": label,
        "floors": asdict(f),
        "token_agreement": agreement,
        "layers_measured": bool(layers),
        "why_no_layers": "" if layers else why_no_layers,
        "worst_layers": worst,
        "failures": failures,
    }
    report["passed"] = not failures
    return report


def judge(report: dict, sides: list[dict], cfg: ModelConfig, cc: CompareConfig) -> dict:
    """Record both sides (``describe_side``) in ``report``; where one is quantized, measure
    the layers when the other is its FP source and judge by ``judge_quantized``; otherwise
    the exact tolerance's verdict stands."""
    report["a"], report["b"] = sides
    quantized = [s for s in sides if s["quant"]]
    if not quantized:
        return report
    q = min(quantized, key=lambda s: s["quant"]["narrowest_bits"])
    ref = next((s for s in sides if s is not q), None)
    layers, why = None, ""
    if not (ref and ref["backend"] == "ort" and q["backend"] == "ort"):
        why = "per-layer SQNR needs both sides as ort=DIR exports"
    elif ref["step_sha256"] != q["quant"]["source_step_sha256"]:
        why = f"per-layer SQNR needs the FP export {q['folder']} was quantized from"
    else:
        layers, inputs = layer_sqnr(cfg, Path(ref["folder"]), Path(q["folder"]), cc)
        report["layer_sqnr_db"], report["input_sqnr_db"] = layers, inputs
    return judge_quantized(report, q["quant"]["narrowest_bits"], q["quant"]["bits"], layers, why)


def _side(s) -> str:
    if isinstance(s, dict):
        return s["spec"]
    return str(s)


def to_markdown(r: dict) -> str:
    c, v = r["config"], r.get("verdict")
    quant = v is not None and v.get("mode") == "quantized"
    tol = f"|a-b| <= {c['atol']} + {c['rtol']}*|a|"
    cols = ["scale", "pn", "max abs", "mean abs", "max rel", "logits SQNR dB", "tokens (forced)"]
    cols += [] if quant else ["within tolerance"]

    def row(s: dict) -> str:
        cells = [
            s["scale"],
            s["pn"],
            f"{s['max_abs']:.3g}",
            f"{s['mean_abs']:.3g}",
            f"{s['max_rel']:.3g}",
            f"{s.get('logit_sqnr_db', float('nan')):.1f}",
            f"{s.get('token_agreement_forced', float('nan')):.3f}",
        ]
        if not quant:  # FP against FP: this column is the verdict, scale by scale
            cells.append("yes" if s["within_tolerance"] else "no")
        return "| " + " | ".join(map(str, cells)) + " |"

    if quant:
        f = v["floors"]
        # The exact tolerance is not what a quantized side is judged by: no per-scale
        # yes/no beside the verdict, one line saying what it found instead.
        met = sum(s["within_tolerance"] for s in r["scales"])
        rule = (
            f"quantized ({v['bits']}): token agreement (forced, all tokens) >= "
            f"{f['token_agreement']} and every layer's SQNR >= {f['sqnr_db']:g} dB. The FP "
            f"tolerance {tol} is not applied to a quantized side; it holds at {met} of "
            f"{len(r['scales'])} scales"
        )
    else:
        rule = tol
    lines = [
        f"# compare {_side(r['a'])} vs {_side(r['b'])}",
        "",
        f"{c['n']} samples, seed {c['seed']}; pass: {rule}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *(row(s) for s in r["scales"]),
        "",
        f"image max abs (forced tokens): {r['image_max_abs']:.3g}  ",
        f"token agreement, forced (all tokens): {r.get('token_agreement_forced', 0):.3f}  ",
        "token agreement, free running: "
        + ", ".join(f"{a:.3f}" for a in r["token_agreement_free_running"]),
        "",
    ]
    for key in ("a", "b"):
        s = r[key]
        if isinstance(s, dict) and s.get("folder"):
            q = s.get("quant")
            kind = f"quantized {q['bits']}" if q else "FP"
            lines.append(f"- {key}: `{s['folder']}` ({kind}), step sha256 {s['step_sha256'][:16]}")
    int8 = r.get("int8") or {}
    lines += [*report_lines(int8.get("cpu"), {k: int8.get(k) for k in ("a", "b")}), ""]
    if quant and v["failures"]:
        lines.append("**FAILED**: " + "; ".join(v["failures"]))
    elif quant:
        worst = ", ".join(f"{n} {d:.1f} dB" for n, d in v["worst_layers"])
        lines.append(
            f"**PASSED** (token agreement {v['token_agreement']:.3f}"
            + (f"; lowest layers {worst}" if worst else f"; {v['why_no_layers']}")
            + ")"
        )
    else:
        lines.append(f"**{'PASSED' if r['passed'] else 'FAILED'}**")
    lines.append("")
    if r.get("layer_sqnr_db"):
        floor = v["floors"]["sqnr_db"] if quant else None
        lines += [
            "## SQNR of each quantized op's output (dB, same tokens)",
            "",
            "| layer | SQNR |",
            "|---|---|",
        ]
        lines += [
            f"| {k} | {d:.1f}{' **under floor**' if floor is not None and not d >= floor else ''} |"
            for k, d in r["layer_sqnr_db"].items()
        ]
        lines.append("")
    return "\n".join(lines)


def write_report(r: dict, out_dir: Path) -> tuple[Path, Path]:
    return json_md.write_report(r, out_dir, "compare", to_markdown)


def describe_side(spec: BackendSpec | str) -> dict:
    """What one side of ``sasq compare`` is: its spec, backend, export folder, the sha256 of
    the step graph (as its verified manifest lists it), and the quantization if any."""
    from sasq.engines.backends import parse_spec
    from sasq.exporter.manifest import verify
    from sasq.exporter.u8s8 import read_record

    if isinstance(spec, str):
        spec = parse_spec(spec)
    backend, folder = spec.label, spec.folder
    if folder is None:
        return {"spec": spec.text, "backend": backend, "folder": None, "quant": None}
    m = verify(folder)
    step = m.graphs["step"].file
    q = m.extra.get("quant")
    if q is None and "peer" in m.extra:  # ONNX Runtime's quantize_static: int8 W8A8
        q = {"w_bits": 8, "a_bits": 8, "target": "ort", **m.extra["peer"]}
    quant = None
    if q:
        w, a = int(q["w_bits"]), int(q["a_bits"])
        kv = int(q.get("kv_bits") or a)
        label = f"W{w}A{a}" + (f" KV{kv}" if kv < a else "")
        quant = {
            "bits": label,
            "narrowest_bits": min(w, a, kv),
            "target": q.get("target"),
            "u8s8": read_record(q, folder),  # None: a peer, the tensorrt target's or older
            "source_step_sha256": q.get("source_step_sha256"),
        }
    return {
        "spec": spec.text,
        "backend": backend,
        "folder": str(Path(folder).resolve()),
        "engine": str(spec.plan) if spec.plan else None,
        "step_sha256": m.files[step].sha256,
        "quant": quant,
    }


def layer_sqnr(
    cfg: ModelConfig, fp_dir: Path, q_dir: Path, cc: CompareConfig
) -> tuple[dict[str, float], dict[str, float]]:
    """SQNR (dB) of every quantized op's output (by model name, graph order) and of every
    quantized op's input (by tensor name), int8 export against the FP export it was made
    from, on the same tokens (the int8 run is teacher-forced with the FP run's tokens),
    pooled over scales. The tensors keep their FP names in both graphs, except those the
    quantizer re-routed (``tensor_aliases``: K and V read from the int8 cache)."""
    import onnx

    from sasq.calib.layer_names import layer_names
    from sasq.engines.ort_backend import OrtBackend
    from sasq.exporter.manifest import verify
    from sasq.quant.targets import quantizable_inputs

    step = onnx.load(str(fp_dir / verify(fp_dir).graphs["step"].file), load_external_data=False)
    targets = quantizable_inputs(step)
    model_names = layer_names(step)
    node_out = {n.name: n.output[0] for n in step.graph.node}
    outputs = {node_out[t.node]: model_names[t.node] for t in targets}
    inputs = list(dict.fromkeys(a for t in targets for a in t.activations))
    aliases = verify(q_dir).extra.get("quant", {}).get("tensor_aliases", {})
    q_step = onnx.load(str(q_dir / verify(q_dir).graphs["step"].file), load_external_data=False)
    produced = {o for n in q_step.graph.node for o in n.output} | {
        i.name for i in q_step.graph.input
    }
    wanted = list(dict.fromkeys([*outputs, *inputs]))
    q_names = {n: aliases.get(n, n) for n in wanted if aliases.get(n, n) in produced}
    names = [n for n in wanted if n in q_names]
    seen: dict[str, dict[str, list]] = {"fp": {}, "q": {}}

    def keep(which: str):
        def on_record(si: int, rec: dict) -> None:
            for n in names:
                src = q_names[n] if which == "q" else n
                seen[which].setdefault(n, []).append(rec[src].ravel().astype("float64"))

        return on_record

    _require_fits(cfg, cc)
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
        OrtBackend(
            q_dir, record=list(dict.fromkeys(q_names[n] for n in names)), on_record=keep("q")
        ),
        labels,
        pns,
        cfg.sampling,
        cc.seed,
        K,
        hook=lambda si, idx, logits: fp.idx[si],
    )

    def db(n: str) -> float:
        return round(sqnr_db(np.concatenate(seen["fp"][n]), np.concatenate(seen["q"][n])), 2)

    by_layer = {outputs[n]: db(n) for n in outputs if n in q_names}
    by_input = {n: db(n) for n in inputs if n in q_names}
    return by_layer, by_input
