"""sasq eval on a small sample: FP scores itself perfectly, int8 stays close, peer runs."""

from __future__ import annotations

import json

import pytest

from sasq.tools.cli import main


@pytest.mark.slow  # 112 s on a busy 2-core machine
def test_eval_table_small(tmp_path, capsys):
    rc = main(
        [
            "eval",
            "--per-class",
            "3",
            "--bits",
            "W8A8,W6A6",
            "--rows",
            "peer-minmax,plain,v-only,v-only-shift-sum",
            "--calib-n",
            "8",
            "--bootstrap",
            "200",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "| plain |" in out and "## W6A6" in out
    assert out.count("\n# ") + out.startswith("# ") == 1  # one top heading
    assert "kv6" not in out and "gps-stwq" not in out  # notes only for rows that ran
    assert "v-only, v-only-shift-sum: only V" in out and "peer-linears" not in out
    from test_bench import _valid_png

    _valid_png(tmp_path / "eval.png")
    r = json.loads((tmp_path / "eval.json").read_text())
    t = r["table"]
    assert r["samples"] == 30
    fp = t["FP"]["W8A8"]
    assert fp["FID2FP"] == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    assert fp["token_agreement"]["value"] == 1.0
    assert t["peer-minmax"]["W6A6"] is None  # ORT's quantize_static is int8 only
    plain = t["plain"]["W8A8"]["token_agreement"]
    assert 0.6 <= plain["value"] < 1.0  # close to FP, not identical
    assert plain["lo"] <= plain["value"] <= plain["hi"] and 0.005 < plain["hi"] - plain["lo"] < 0.4
    assert t["plain"]["W8A8"]["class_acc"]["value"] >= 0.9
    assert t["plain"]["W6A6"]["token_agreement"]["value"] <= plain["value"] + 0.05
    # The V-only ablation isolates shift-and-sum's mechanism: the AV output's error drops,
    # every layer, by far more than the interval.
    v, vs = t["v-only"]["W6A6"], t["v-only-shift-sum"]["W6A6"]
    assert vs["AV_SQNR_dB"]["lo"] > v["AV_SQNR_dB"]["hi"] + 3.0
    assert len(v["AV_SQNR_dB_per_layer"]) == 4
    d = r["differences"]["W6A6"]["v-only-shift-sum"]
    assert d["baseline"] == "v-only" and d["AV_SQNR_dB"]["significant"]
    assert r["differences"]["W8A8"]["peer-minmax"]["baseline"] == "plain"
    # each ORT cell records its int8 kernels; sasq's export form is bounded, the peer's none
    cells = r["int8"]["cells"]
    assert cells["plain"]["W8A8"]["export_u8s8"]["form"] == "bounded"
    assert cells["peer-minmax"]["W8A8"]["export_u8s8"] is None and "v-only" not in cells
    assert "int8 kernels" in out and r["int8"]["cpu"]["u8s8_kernel"]


def test_eval_refuses_unknown_bits(capsys):
    assert main(["eval", "--bits", "W3A3"]) == 2
    assert "unknown bit widths" in capsys.readouterr().err
