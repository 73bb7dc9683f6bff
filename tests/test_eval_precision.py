"""sasq eval's TensorRT precision rows (tools/quality/eval_precision.py): fp16 close to FP, fp8 and
int8 close but not identical, W8A8 only, differences against their own baselines."""

from __future__ import annotations

import json

import pytest

from sasq.tools.cli import main
from sasq.tools.quality.config import DEFAULT_ROWS, ROWS, EvalConfig


def test_precision_rows_are_selectable_not_default():
    new = {"trt-int8", "trt-int8-fp16", "trt-fp8", "trt-fp8-shift-sum", "fp16"}
    assert new <= set(ROWS) and not new & set(DEFAULT_ROWS) and EvalConfig().rows == DEFAULT_ROWS


@pytest.mark.slow  # exports, calibrates, quantizes three ways: ~2 min on a busy 2-core machine
def test_eval_precision_rows(tmp_path, capsys):
    rows = "trt-int8,trt-fp8,trt-fp8-shift-sum,fp16"
    argv = ["eval", "--per-class", "2", "--bits", "W8A8,W6A6", "--rows", rows,
            "--calib-n", "8", "--bootstrap", "200", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| trt-fp8 |" in out and "fp8: E4M3 Q/DQ" in out
    r = json.loads((tmp_path / "eval.json").read_text())
    t = r["table"]
    assert all(t[row]["W6A6"] is None for row in rows.split(","))  # 8-bit formats only
    fp16 = t["fp16"]["W8A8"]["token_agreement"]
    int8, fp8 = (t[k]["W8A8"]["token_agreement"] for k in ("trt-int8", "trt-fp8"))
    assert fp16["value"] >= 0.95  # fp16 round-off barely moves a token
    for q in (int8, fp8):  # 8 bits: close to FP, not identical, and below fp16
        assert 0.5 <= q["value"] < fp16["value"] and q["lo"] <= q["value"] <= q["hi"]
    d = r["differences"]["W8A8"]
    assert d["trt-fp8"]["baseline"] == "trt-int8"
    assert d["trt-fp8-shift-sum"]["baseline"] == "trt-fp8"
    assert "fp16" not in d  # no baseline: compared with FP in the table itself
