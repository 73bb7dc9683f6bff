"""sasq compare: per-scale errors on identical inputs, pass/fail tolerances."""

from __future__ import annotations

import json

from sasq.models import load_model
from sasq.tools.cli import main
from sasq.tools.compare import CompareConfig, compare_backends
from sasq.tools.generate import make_backend


def test_torch_and_ort_fp32_agree_per_scale(default_export):
    model = load_model()
    r = compare_backends(
        model.cfg,
        make_backend("torch", model),
        make_backend("ort", None, default_export),
        CompareConfig(n=8),
    )
    assert r["passed"] and len(r["scales"]) == 4
    assert max(s["max_abs"] for s in r["scales"]) < 1e-4
    assert r["image_max_abs"] < 1e-4
    assert r["token_agreement_free_running"] == [1.0, 1.0, 1.0, 1.0]


def test_compare_fails_when_tolerance_is_below_the_error(default_export, tmp_path, capsys):
    rc = main(
        [
            "compare",
            "torch",
            f"ort={default_export}",
            "--atol",
            "0",
            "--rtol",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "FAILED" in out  # fp32 round-off is not exactly zero
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["passed"] is False and saved["scales"][3]["max_abs"] > 0


def test_bad_backend_spec_is_one_line(capsys):
    assert main(["compare", "torch", "ort"]) == 2
    assert "expected torch, ort=DIR" in capsys.readouterr().err


def test_layer_sqnr_of_an_int8_export(default_export, tmp_path, capsys):
    import math

    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.exporter.qdq_config import QuantConfig
    from sasq.exporter.quantize import quantize

    cache = calibrate(default_export, CalibConfig(num_samples=8, progress=False)).cache
    q = quantize(default_export, cache, QuantConfig(), tmp_path / "int8")
    rc = main(
        [
            "compare",
            f"ort={default_export}",
            f"ort={q}",
            "--n",
            "8",
            "--atol",
            "10",
            "--out",
            str(tmp_path / "cmp"),
        ]
    )
    assert rc == 0
    sqnr = json.loads((tmp_path / "cmp" / "compare.json").read_text())["layer_sqnr_db"]
    assert len(sqnr) == 8 * 4 + 1  # every quantizable input of the 4-block default
    finite = [v for v in sqnr.values() if math.isfinite(v)]
    assert min(finite) >= 15.0 and max(finite) <= 60.0, sqnr
    assert "SQNR of each quantized op" in capsys.readouterr().out
