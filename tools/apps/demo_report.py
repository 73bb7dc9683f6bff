"""The demo's ``report.md`` and the few lines it prints: one document a person reads.

One top heading, short tables, numbers rounded to what their noise allows (token agreement
in whole percent: a scale of one token over 80 images moves by 1/80 per token; quality
numbers to the digits of their bootstrap interval; speed-ups to two digits with the spread
of the repeats), the bench's warnings when the machine was busy, and links to the full
tables (``eval.md``, ``bench.md``), the plots and ``summary.json`` (every stage's numbers).
No JSON in the markdown.
"""

from __future__ import annotations

from pathlib import Path

from sasq.tools.report.int8_record import report_lines

_EVAL_METRICS = (
    ("token_agreement", "token agreement, mean over scales"),
    ("FID2FP", "FID2FP"),
    ("class_acc", "class acc"),
)


def _secs(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _pct(values: list[float]) -> str:
    return " / ".join(f"{100 * v:.0f}" for v in values)


def _generations(stages: dict) -> list[tuple[str, list[float]]]:
    return [
        (name.removeprefix("generate "), r["token_agreement_vs_torch_fp"])
        for name, r in stages.items()
        if "token_agreement_vs_torch_fp" in r
    ]


def _speedups(bench: dict) -> tuple[str, list[str], list[str]]:
    """The baseline's name, the table lines (backend x batch) and the warnings."""
    runs = bench["runs"]
    names = list(runs[0]["backends"])
    base = names[0]
    head = "| backend | " + " | ".join(f"batch {r['batch']}" for r in runs) + " |"
    lines = [head, "|---|" + "---|" * len(runs)]
    for n in names:
        cells = []
        for run in runs:
            r, b = run["backends"][n], run["backends"][base]
            cells.append(
                f"{b['e2e_ms_median'] / r['e2e_ms_median']:.2f}x (±{50 * r['e2e_spread']:.0f}%)"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return base, lines, list(bench.get("warnings", []))


def _steps_lines(bench: dict) -> list[str]:
    """The decode steps' own speed-up beside the end-to-end one, and why they differ on a
    small model: the steps are what int8 quantizes; the decoder and the host loop (start
    and next-scale graphs, sampling) are not. Nothing for a bench without step times."""
    run = bench["runs"][-1]
    rows = run["backends"]
    if not all("step_ms_median" in r for r in rows.values()):
        return []
    names = list(rows)
    steps = {n: sum(rows[n]["step_ms_median"]) for n in names}
    ratios = ", ".join(f"{n} {steps[names[0]] / steps[n]:.2f}x" for n in names[1:])
    share = steps[names[0]] / rows[names[0]]["e2e_ms_median"]
    width = bench["settings"].get("model", {}).get("embed_dim")
    wide = f" is {width} wide:" if width else ":"
    return [
        "",
        f"Decode steps alone at batch {run['batch']} (the part int8 quantizes), over "
        f"{names[0]}: {ratios}. The embedded model{wide} its steps are "
        f"{100 * share:.0f}% of {names[0]}'s end-to-end time, the rest the decoder and the "
        "host loop (start and next-scale graphs, sampling), which int8 does not touch; so "
        "the end-to-end ratio understates int8 here, and the steps' ratio is where it shows. "
        "The README's speed section measures a full-size VAR-d16.",
    ]


def _short(warnings: list[str]) -> list[str]:
    """The bench's warnings, its per-row spread warnings folded into one line when many."""
    spread = [w for w in warnings if ": spread " in w]
    if len(spread) <= 2:
        return [f"- {w}" for w in warnings]
    worst = max(int(w.split(": spread ")[1].split("%")[0]) for w in spread)
    rest = [f"- {w}" for w in warnings if w not in spread]
    return [
        *rest,
        f"- {len(spread)} rows' repeats spread more than 10% of their median (up to "
        f"{worst}%): each listed in `bench.md`",
    ]


def _eval_lines(ev: dict) -> list[str]:
    from sasq.tools.quality.evaluate import fmt

    b = ev["config"]["bits"][0]
    lines = [
        "| row | " + " | ".join(label for _, label in _EVAL_METRICS) + " |",
        "|---|" + "---|" * len(_EVAL_METRICS),
    ]
    for row, cells in ev["table"].items():
        c = cells.get(b)
        if c:
            lines.append(f"| {row} | " + " | ".join(fmt(c[m]) for m, _ in _EVAL_METRICS) + " |")
    return lines


def demo_report(stages: dict, ev: dict | None, bench: dict, model: str) -> str:
    """The markdown report of a demo run (``run_demo``'s stage summaries and results)."""
    m = bench["machine"]
    load = (m.get("loadavg_1min") or {}).get("before")
    lines = [
        "# sasq demo",
        "",
        f"Model `{model}`; {m.get('cpu_count')} CPUs"
        + (f", 1-min load average {load:.2f} at the bench" if load is not None else "")
        + "; "
        + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
        + ". Every stage's numbers: `summary.json`.",
        "",
        "## FP32 vs int8 with shift-and-sum (same seeds)",
        "",
        "![PyTorch FP32 vs int8 with shift-and-sum](fp_vs_int8.png)",
        "",
        "Left PyTorch FP32 (`fp_torch.png`), right W8A8 int8 with shift-and-sum under ONNX "
        "Runtime (`int8-ss_ort.png`). Also `fp_ort.png` (FP32 under ONNX Runtime) and "
        "`int8_ort.png` (plain int8, no shift-and-sum).",
        "",
        "## Token agreement with PyTorch FP, free running, per scale",
        "",
        "Each backend generates the grids above on its own from the same labels and seeds; "
        "the share of positions (%) where it chose PyTorch FP32's token, per scale, coarse to "
        "fine. Free running: a token that differs at one scale changes the context of every "
        "later one.",
        "",
        "| backend | per scale (%) |",
        "|---|---|",
        *(f"| {name} | {_pct(ta)} |" for name, ta in _generations(stages)),
    ]
    if ev is not None:
        lines += [
            "",
            f"## Quality against FP ({ev['samples']} samples, {ev['config']['bits'][0]})",
            "",
            "Value ± half-width of the 95% bootstrap interval; FP (seed+1) is the noise floor. "
            "Token agreement here is free running too, but the mean over scales, on the "
            f"eval's {ev['samples']} samples and with the eval's own calibration and exports: "
            "not the per-scale numbers above. "
            "All rows, differences and notes: `eval.md`, plot `eval.png`.",
            "",
            *_eval_lines(ev),
        ]
    base, speed, warnings = _speedups(bench)
    repeats = bench["settings"]["repeats"]
    lines += [
        "",
        f"## Speed (end-to-end speed-up over {base})",
        "",
        f"Median of {repeats} interleaved repeats, ± half the spread (max - min) of the "
        "backend's own repeats. Per-scale latencies: `bench.md`, plot `bench.png`.",
        "",
        *speed,
        *_steps_lines(bench),
    ]
    if warnings:
        lines += ["", "Warnings (these ratios are doubtful):", "", *_short(warnings)]
    int8 = report_lines(m.get("int8"), bench.get("int8_kernels"))
    if int8:  # ONNX Runtime's int8 results depend on the CPU where u8 x s8 can saturate
        lines += ["", "## int8 kernels (what the numbers above ran on)", *int8]
    lines += [
        "",
        "## Stages",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {name} | {_secs(r['seconds'])} |" for name, r in stages.items()),
        "",
    ]
    return "\n".join(lines)


def demo_summary(stages: dict, ev: dict | None, bench: dict, report: Path) -> str:
    """A few lines for the terminal; the report holds the rest."""
    total = sum(r["seconds"] for r in stages.values())
    lines = [f"sasq demo: {len(stages)} stages in {_secs(total)} s"]
    ta = ", ".join(f"{n} {100 * sum(t) / len(t):.0f}%" for n, t in _generations(stages))
    lines.append(f"  token agreement with torch FP (free running, mean over scales): {ta}")
    if ev is not None:
        b = ev["config"]["bits"][0]
        rows = [(r, c[b]) for r, c in ev["table"].items() if not r.startswith("FP") and c.get(b)]
        best = max(rows, key=lambda rc: rc[1]["token_agreement"]["value"], default=None)
        if best:
            from sasq.tools.quality.evaluate import fmt

            lines.append(
                f"  eval {b}: best token agreement (free running, mean over scales) {best[0]} "
                f"{fmt(best[1]['token_agreement'])} ({ev['samples']} samples)"
            )
    run = bench["runs"][-1]
    names = list(run["backends"])
    base = run["backends"][names[0]]["e2e_ms_median"]
    speed = ", ".join(f"{n} {base / run['backends'][n]['e2e_ms_median']:.2f}x" for n in names[1:])
    lines.append(f"  speed-up over {names[0]} at batch {run['batch']}: {speed}")
    if bench.get("warnings"):
        lines.append(f"  {len(bench['warnings'])} bench warning(s): see the report")
    lines.append(f"report: {report}")
    return "\n".join(lines)
