"""The PNG plots beside the bench's and the eval's JSON: what a person looks at first.

- ``bench.png``: step latency per scale for every backend (median, min-max bars) at each
  batch size, and the end-to-end speed-up over the first backend as bars per batch size;
  a backend keeps its colour in every panel.
- ``eval.png``: quality against bit width, token agreement with FP and its 95% interval,
  one line per row (quantizer).

matplotlib with the Agg backend (no display needed); each file is written under a temporary
name and renamed, like every other result file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Lay out, write to a temporary name and rename (never a half-written PNG), close."""
    plt = pyplot()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=100, format="png")
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _bars(values: list[float], lo: list[float], hi: list[float]):
    v = np.asarray(values)
    return np.maximum(v - np.asarray(lo), 0), np.maximum(np.asarray(hi) - v, 0)


def bench_plot(result: dict, path: Path) -> Path:
    """``bench_figure`` written to ``path``."""
    return save_png(bench_figure(result), path)


def backend_colours(names: list[str]) -> dict[str, str]:
    """One colour per backend, by its place in the run: the same in every panel."""
    return {name: f"C{k % 10}" for k, name in enumerate(names)}


def log_ticks(ax) -> None:
    """Plain numbers (2, 5, 10; not 2x10^0) on a log y axis, without collisions: labelled
    decades (LogLocator thins them over many decades), and labelled minor ticks only on an
    axis spanning at most a decade (LogFormatter's minor_thresholds: a subset of them up to
    1 decade, all under 0.4). Labelling every minor tick once made 0.06 .. 0.09 and 0.1
    collide."""
    from matplotlib.ticker import LogFormatter, LogLocator

    class Plain(LogFormatter):
        """LogFormatter's choice of ticks to label, written as plain numbers."""

        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs="auto", numticks=12))
    ax.yaxis.set_major_formatter(Plain(base=10, labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(Plain(base=10, labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def bench_figure(result: dict):
    """Left panels: step latency per scale per backend, one panel per batch size (log
    scale: the last scale dominates); right: speed-up over the first backend. A backend
    has one colour in every panel."""
    plt = pyplot()

    runs = result["runs"]
    colour = backend_colours(list(runs[0]["backends"]))
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(4.2 * (len(runs) + 1), 3.4))
    for ax, run in zip(axes, runs, strict=False):
        x = [f"{s['pn']}x{s['pn']}" for s in run["scales"]]
        for name, r in run["backends"].items():
            med = r["step_ms_median"]
            err = _bars(med, r["step_ms_min"], r["step_ms_max"])
            ax.errorbar(x, med, yerr=err, marker="o", capsize=3, label=name, color=colour[name])
        ax.set_yscale("log")
        log_ticks(ax)
        ax.set_xlabel("scale (token map)")
        ax.set_ylabel("step latency, ms (median, min-max)")
        ax.set_title(f"batch {run['batch']}")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    names = list(runs[0]["backends"])
    base, others = names[0], names[1:] or names[:1]
    width = 0.8 / len(others)
    for k, name in enumerate(others):
        speed = [
            run["backends"][base]["e2e_ms_median"] / run["backends"][name]["e2e_ms_median"]
            for run in runs
        ]
        pos = np.arange(len(runs)) + (k - (len(others) - 1) / 2) * width
        ax.bar(pos, speed, width, label=name, color=colour[name])
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(runs)), [f"batch {run['batch']}" for run in runs])
    ax.set_ylabel(f"end-to-end speed-up vs {base}")
    ax.set_title("speed-up (median of repeats)")
    ax.legend(fontsize=7)
    return fig


def eval_plot(result: dict, path: Path, metric: str = "token_agreement") -> Path:
    """``metric`` (token agreement with FP) against bit width, one line per row with its
    95% interval; FP with another seed as the noise floor line."""
    plt = pyplot()
    bits = list(result["config"]["bits"])
    table = result["table"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    x = np.arange(len(bits))
    rows = [r for r in table if not r.startswith("FP")]
    for k, row in enumerate(rows):
        have = [(i, table[row][b]) for i, b in enumerate(bits) if table[row].get(b)]
        if not have:
            continue
        xs = np.array([i for i, _ in have]) + (k - (len(rows) - 1) / 2) * 0.05
        cells = [c[metric] for _, c in have]
        v = [c["value"] for c in cells]
        err = _bars(v, [c["lo"] for c in cells], [c["hi"] for c in cells])
        ax.errorbar(xs, v, yerr=err, marker="o", capsize=3, label=row)
    floor = table.get("FP (seed+1)", {}).get(bits[0])
    if floor:
        ax.axhline(floor[metric]["value"], color="grey", ls="--", lw=0.8, label="FP, seed+1")
    ax.set_xticks(x, bits)
    ax.set_xlabel("bit width")
    ax.set_ylabel(f"{metric.replace('_', ' ')} with FP (95% interval)")
    ax.set_title(f"quality against bits ({result['samples']} samples)")
    ax.legend(fontsize=7, ncol=2)
    return save_png(fig, path)
