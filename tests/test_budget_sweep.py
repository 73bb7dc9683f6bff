"""sasq sweep-budget on a small sample: budget 0 is its own baseline, the copies change the
graph's numbers, the report, plot and timing are written."""

from __future__ import annotations

import json

import pytest

from sasq.tools.cli import main


@pytest.mark.slow  # 78 s on a busy 2-core machine
def test_sweep_small(tmp_path, capsys):
    rc = main(
        [
            "sweep-budget",
            "--budgets",
            "0,0.05",
            "--bits",
            "W8A8",
            "--kv-bits",
            "4",
            "--per-class",
            "3",
            "--calib-n",
            "8",
            "--bootstrap",
            "100",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0 and "sweep.png" in capsys.readouterr().err  # the closing "wrote" line
    r = json.loads((tmp_path / "sweep.json").read_text())
    (c0, c5) = r["groups"]["W8A8 cache=4"]
    assert c0["budget"] == 0.0 and c5["budget"] == 0.05
    d0 = c0["vs_plain"]["token_agreement"]
    assert d0["value"] == 0.0 and not d0["significant"]  # budget 0 against itself
    ta0, ta5 = c0["metrics"]["token_agreement"], c5["metrics"]["token_agreement"]
    assert 0.3 < ta0["value"] < 1.0 and ta0["lo"] <= ta0["value"] <= ta0["hi"]
    assert ta5["value"] != ta0["value"]  # the copies reached the 4-bit cache's numbers
    # Timed: only real int8 (a 4-bit cache is simulated), so no row here.
    assert r["time"] is None
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def test_sweep_refuses_budgets_without_zero(capsys):
    assert main(["sweep-budget", "--budgets", "0.01,0.05"]) == 2
    assert "must include 0" in capsys.readouterr().err


def test_sweep_refuses_a_model_the_classifier_cannot_score(tmp_path, capsys):
    from sasq.models import DEFAULT_DIR

    for f in ("config.json", "vqvae.safetensors", "var.safetensors"):
        (tmp_path / f).write_bytes((DEFAULT_DIR / f).read_bytes())
    assert main(["sweep-budget", "--model", str(tmp_path)]) == 2
    assert "only the embedded models" in capsys.readouterr().err
