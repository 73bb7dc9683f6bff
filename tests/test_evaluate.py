"""sasq eval on a small sample: FP scores itself perfectly, int8 stays close, peer runs."""

from __future__ import annotations

import json

from sasq.tools.cli import main


def test_eval_table_small(tmp_path, capsys):
    rc = main(
        [
            "eval",
            "--per-class",
            "3",
            "--bits",
            "W8A8,W6A6",
            "--rows",
            "peer-minmax,plain",
            "--calib-n",
            "8",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0 and "| plain |" in capsys.readouterr().out
    r = json.loads((tmp_path / "eval.json").read_text())
    t = r["table"]
    assert r["samples"] == 30
    assert t["FP"]["W8A8"]["FID2FP"] == 0.0 and t["FP"]["W8A8"]["token_agreement"] == 1.0
    assert t["peer-minmax"]["W6A6"] is None  # ORT's quantize_static is int8 only
    plain = t["plain"]["W8A8"]
    assert 0.6 <= plain["token_agreement"] < 1.0  # close to FP, not identical
    assert plain["class_acc"] >= 0.9
    assert t["plain"]["W6A6"]["token_agreement"] <= plain["token_agreement"] + 0.05


def test_eval_refuses_unknown_bits(capsys):
    assert main(["eval", "--bits", "W3A3"]) == 2
    assert "unknown bit widths" in capsys.readouterr().err
