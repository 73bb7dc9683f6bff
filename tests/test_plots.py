"""bench.png as a person reads it: a backend keeps its colour in every panel, and the labels
of the log latency axes never print over each other, whatever range the timings span."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.colors import to_hex

from sasq.tools.report import plots as report_plots

NAMES = ("torch", "ort", "int8", "int8-ss")


def _result(lo_ms: float, hi_ms: float, batches=(1, 8, 32), n_scales: int = 7) -> dict:
    """A bench result whose step medians run from lo_ms to hi_ms (x the backend's and the
    batch's factors), as bench_figure reads it."""
    runs = []
    for bi, B in enumerate(batches):
        backends = {}
        for k, name in enumerate(NAMES):
            med = list(np.geomspace(lo_ms, hi_ms, n_scales) * (1 + 0.3 * k) * (1 + bi))
            backends[name] = {
                "step_ms_median": med,
                "step_ms_min": [m * 0.9 for m in med],
                "step_ms_max": [m * 1.1 for m in med],
                "e2e_ms_median": sum(med),
            }
        runs.append({"batch": B, "scales": [{"pn": p} for p in range(1, n_scales + 1)],
                     "backends": backends})  # fmt: skip
    return {"runs": runs}


@pytest.fixture
def figure(monkeypatch):
    """The figure bench_plot would write, laid out as save_png lays it out, then closed."""
    figs = []
    monkeypatch.setattr(report_plots, "save_png", lambda fig, path: figs.append(fig) or path)

    def make(result):
        report_plots.bench_plot(result, "unused.png")
        (fig,) = figs[-1:]
        fig.tight_layout()
        fig.canvas.draw()
        return fig

    yield make
    for fig in figs:
        report_plots.pyplot().close(fig)


def test_a_backend_has_one_colour_in_every_panel(figure):
    fig = figure(_result(0.2, 50))
    *latency, speedup = fig.axes
    seen: dict[str, set[str]] = {}
    for ax in latency:  # one ErrorbarContainer per backend: its data line and error bars
        for eb in ax.containers:
            data_line, _, (bars,) = eb.lines
            colours = {to_hex(data_line.get_color()), to_hex(bars.get_color()[0])}
            seen.setdefault(eb.get_label(), set()).update(colours)
    for bars in speedup.containers:  # one BarContainer per backend but the baseline
        colours = {to_hex(p.get_facecolor()) for p in bars.patches}
        seen.setdefault(bars.get_label(), set()).update(colours)
    assert set(seen) == set(NAMES)
    assert all(len(c) == 1 for c in seen.values()), seen  # the same colour everywhere
    assert len({next(iter(c)) for c in seen.values()}) == len(NAMES)  # and told apart
    # the speed-up panel draws every backend but the baseline
    assert {b.get_label() for b in speedup.containers} == set(NAMES[1:])


@pytest.mark.parametrize(
    "lo_ms,hi_ms", [(0.05, 3000), (0.2, 5), (1, 30), (2, 6), (3, 3.5)],
    ids=["5 decades", "1.4 decades", "1.5 decades", "half a decade", "a sliver"],
)  # fmt: skip
def test_log_axis_labels_do_not_overlap(figure, lo_ms, hi_ms):
    fig = figure(_result(lo_ms, hi_ms))
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:-1]:
        assert ax.get_yscale() == "log"
        box = ax.get_window_extent(renderer)
        labels = [
            t
            for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)
            if t.get_visible() and t.get_text()
        ]
        shown = [  # tick labels outside the axis' span are not drawn
            t.get_window_extent(renderer)
            for t in labels
            if box.y0 - 1 <= t.get_window_extent(renderer).get_points().mean(0)[1] <= box.y1 + 1
        ]
        assert len(shown) >= 2, [t.get_text() for t in labels]  # the axis is still read
        for a, b in itertools.combinations(shown, 2):
            assert not a.overlaps(b), (ax.get_title(), [t.get_text() for t in labels])
