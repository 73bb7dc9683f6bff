"""tools.steadiness: the rules every timing command follows (median, spread, load)."""

from __future__ import annotations

from sasq.tools.measure import steadiness as S


def test_summary_and_spread():
    s = S.summary([10.0, 12.0, 11.0])
    assert (s["median"], s["min"], s["max"]) == (11.0, 10.0, 12.0)
    assert abs(s["spread"] - 2 / 11) < 1e-12
    assert S.spread_warning("x", S.summary([10.0, 10.5, 10.2])) == []
    (w,) = S.spread_warning("batch 1, ort", s)
    assert "spread 18%" in w and "min 10.0" in w and "max 12.0 ms" in w


def test_load_average_is_rounded_and_warned(monkeypatch):
    monkeypatch.setattr(S.os, "getloadavg", lambda: (7.0556640625, 1.0, 1.0))
    assert S.loadavg() == 7.06
    (w,) = S.load_warning(S.loadavg())
    assert "7.06" in w and "7.0556" not in w
    assert S.load_warning(0.2) == [] and S.load_warning(None) == []
