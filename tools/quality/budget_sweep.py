"""``sasq sweep-budget``: shift-and-sum's quality against its cost, budget by budget.

For each bit width and cache width, the same FP export and calibration are quantized with
shift-and-sum at every budget (0 = plain). One budget sets both caps of the int8 cache's
copies: the extra AV work and the cache rows they add (``ShiftSumConfig.budget`` and
``cache_budget``). Every cell is scored against FP on the same samples as ``sasq eval``
(95% paired half-sampling intervals, and each budget's paired difference from budget 0); the
real-int8 exports (W8A8, int8 cache) are then timed side by side in one ``sasq bench`` run,
so the extra time is a ratio of medians from one run. Writes sweep.json, sweep.md and
sweep.png.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sasq import progress
from sasq.engines.backends import make_backend
from sasq.exporter.qdq_config import BIT_WIDTHS
from sasq.models import LoadedModel
from sasq.tools.quality.classifier import DigitsClassifier
from sasq.tools.quality.config import EvalConfig, SweepConfig
from sasq.tools.quality.evaluate import METRICS, Scorer, Workspace, fmt
from sasq.tools.quality.intervals import difference_dicts, intervals
from sasq.tools.report import json_md

PLOTTED = ("token_agreement", "FID2FP")


def _cache_label(kv: int | None) -> str:
    return "cache=A" if kv is None else f"cache={kv}"


def _pct(b: float) -> str:
    return f"{100 * b:g}%"


def sweep_budget(model: LoadedModel, clf: DigitsClassifier, sc_cfg: SweepConfig) -> dict:
    from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
    from sasq.exporter.quantize import quantize
    from sasq.tools.measure.bench import run_bench
    from sasq.tools.measure.config import BenchConfig

    t0 = time.perf_counter()
    ec = EvalConfig(
        per_class=sc_cfg.per_class,
        calib_samples=sc_cfg.calib_samples,
        seed=sc_cfg.seed,
        bootstrap=sc_cfg.bootstrap,
        progress=sc_cfg.progress,  # the FP reference and the export; the sweep has its bar
    )
    scorer = Scorer(model, clf, ec)
    cells: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(model, Path(tmp), ec)
        calib = ws.cache("none")
        timed: list[str] = []
        todo = [(b, kv, x) for b in sc_cfg.bits for kv in sc_cfg.kv_bits for x in sc_cfg.budgets]
        base: dict[tuple[str, str], dict] = {}
        for bits, kv, budget in progress.bar(todo, "sweep", enabled=sc_cfg.progress):
            w, a = BIT_WIDTHS[bits]
            ss = ShiftSumConfig(enabled=budget > 0, budget=budget, cache_budget=budget)
            qc = QuantConfig(w_bits=w, a_bits=a, shift_sum=ss, kv_bits=kv)
            name = f"{bits}-{_cache_label(kv)}-{_pct(budget)}"
            out = quantize(ws.fp, calib, qc, Path(tmp) / name)
            reps, _ = scorer.replicates(scorer.run(make_backend("ort", None, out)))
            group = f"{bits} {_cache_label(kv)}"
            if budget == 0.0:
                base[group] = reps
            cells.setdefault(group, []).append(
                {
                    "budget": budget,
                    "metrics": {m: iv.as_dict() for m, iv in intervals(reps).items()},
                    "vs_plain": difference_dicts(reps, base[group]),
                    "dir": name,
                }
            )
            if bits == "W8A8" and (kv is None or kv == 8):
                timed.append(f"{_pct(budget)}={out}")
        bench = None
        if timed:
            bc = BenchConfig(
                backends=tuple(timed),
                batch_sizes=(sc_cfg.bench_batch,),
                repeats=sc_cfg.bench_repeats,
                threads=sc_cfg.threads,
                gemm_peak=False,
            )
            bench = run_bench(model, ws.fp, bc)
    return {
        "config": asdict(sc_cfg),
        "samples": len(scorer.labels),
        "groups": cells,
        "time": _extra_time(bench) if bench else None,
        "machine": bench["machine"] if bench else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "notes": [
            "one budget caps both the copies' extra AV work and the int8 cache rows they add",
            "every number: value with its 95% half-sampling interval; vs_plain: the paired "
            "difference from budget 0 (same seeds, same half-samples), significant when it "
            "excludes 0",
            "cache=A: the int8 cache at the activations' bits; cache=4: 4 bits (simulated)",
            "time: W8A8 exports on ONNX Runtime CPU in one bench run (median of repeats, "
            "min-max spread), extra time relative to budget 0",
        ],
    }


def _extra_time(bench: dict) -> dict:
    run = bench["runs"][0]
    labels = list(run["backends"])
    b0 = run["backends"][labels[0]]
    rows = {}
    for label, b in run["backends"].items():
        rows[label] = {
            "e2e_ms_median": round(b["e2e_ms_median"], 2),
            "e2e_ms_min": round(b["e2e_ms_min"], 2),
            "e2e_ms_max": round(b["e2e_ms_max"], 2),
            "extra": round(b["e2e_ms_median"] / b0["e2e_ms_median"] - 1.0, 4),
        }
    return {
        "batch": run["batch"],
        "rows": rows,
        "warnings": bench.get("warnings", []),
        "load_average": bench["machine"].get("loadavg_1min"),
    }


def to_markdown(r: dict) -> str:
    lines = [
        f"# sasq sweep-budget ({r['samples']} samples, {r['seconds']} s)",
        "",
        "Every number: value ± half-width of its 95% half-sampling interval; † marks a difference",
        "from budget 0 that is significant (paired).",
    ]
    for group, cells in r["groups"].items():
        lines += ["", f"## {group}", "", "| budget | " + " | ".join(METRICS) + " |"]
        lines.append("|---|" + "---|" * len(METRICS))
        for c in cells:
            vals = [
                fmt(c["metrics"][m]) + (" †" if c["vs_plain"][m]["significant"] else "")
                for m in METRICS
            ]
            lines.append(f"| {_pct(c['budget'])} | " + " | ".join(vals) + " |")
    t = r.get("time")
    if t:
        lines += [
            "",
            f"## Time (W8A8, int8 cache, batch {t['batch']}, ONNX Runtime CPU)",
            "",
            "| budget | end-to-end ms, median | min | max | extra vs 0 |",
            "|---|---|---|---|---|",
        ]
        for label, row in t["rows"].items():
            lines.append(
                f"| {label} | {row['e2e_ms_median']} | {row['e2e_ms_min']} | "
                f"{row['e2e_ms_max']} | {100 * row['extra']:+.1f}% |"
            )
        lines += ["", *[f"- warning: {w}" for w in t["warnings"]]]
    return "\n".join([*lines, "", "Notes:", "", *[f"- {n}" for n in r["notes"]], ""])


def plot(r: dict, path: Path) -> Path:
    """Quality against budget (one panel per plotted metric, a line per group, 95% bars),
    and the extra time where it was measured."""
    from sasq.tools.report.plots import pyplot, save_png

    plt = pyplot()
    panels = len(PLOTTED) + (1 if r.get("time") else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    for ax, m in zip(axes, PLOTTED, strict=False):
        for group, cells in r["groups"].items():
            x = np.array([100 * c["budget"] for c in cells])
            v = np.array([c["metrics"][m]["value"] for c in cells])
            # Half-sampling intervals hold their value; the clip at 0 only keeps round-off in
            # a stored (rounded) interval from giving a bar negative length.
            lo = np.maximum(v - np.array([c["metrics"][m]["lo"] for c in cells]), 0)
            hi = np.maximum(np.array([c["metrics"][m]["hi"] for c in cells]) - v, 0)
            ax.errorbar(x, v, yerr=(lo, hi), marker="o", capsize=3, label=group)
        ax.set_xlabel("shift-and-sum budget (%)")
        ax.set_title(m)
    axes[0].legend(fontsize=7)
    if r.get("time"):
        ax = axes[-1]
        rows = r["time"]["rows"]
        ax.bar(list(rows), [100 * x["extra"] for x in rows.values()])
        ax.set_xlabel("budget")
        ax.set_title("extra time vs budget 0 (%)")
    return save_png(fig, path)


def write_report(r: dict, out_dir: Path) -> tuple[Path, Path, Path]:
    j, md = json_md.write_report(r, out_dir, "sweep", to_markdown)
    return j, md, plot(r, Path(out_dir) / "sweep.png")
