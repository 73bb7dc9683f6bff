"""sasq selftest without --gpu: the CPU checks run, the GPU ones are reported skipped."""

from __future__ import annotations

import json

import pytest

from sasq.tools.cli import main


@pytest.mark.slow
def test_cpu_selftest_runs_the_chain_and_says_why_gpu_is_skipped(tmp_path, capsys):
    rc = main(["selftest", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    report = json.loads((tmp_path / "selftest.json").read_text())
    checks = [r["check"] for r in report["cpu"]]
    assert len(checks) == 6 and all(r["passed"] for r in report["cpu"])
    assert any("PyTorch" in c for c in checks) and any("lint" in c for c in checks)
    assert "--gpu not given" in report["gpu_skipped"]
    assert "SKIPPED GPU checks" in out and "selftest PASSED" in out


@pytest.mark.slow
def test_gpu_selftest_on_the_simulator_runs_every_check(tmp_path, capsys):
    """What CI can run of the GPU path: every check of ``selftest --gpu`` against the
    contract simulator, each recorded as name / passed / detail."""
    rc = main(["selftest", "--gpu", "--simulate", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    report = json.loads((tmp_path / "selftest.json").read_text())
    assert report["mode"] == "simulated" and report["gpu"] == "none (simulated)"
    checks = report["checks"]
    assert all(set(c) >= {"name", "passed", "detail"} and c["passed"] for c in checks)
    names = " | ".join(c["name"] for c in checks)
    for precision in ("fp32", "int8"):
        assert f"{precision}: two generations in a row" in names
        assert f"{precision}: batches 1, 2, 4" in names
        assert f"{precision}: batch 5 refused" in names
    assert "another export is refused" in names
    assert "selftest PASSED (simulated" in out


def test_simulate_without_gpu_is_one_line(tmp_path, capsys):
    assert main(["selftest", "--simulate", "--out", str(tmp_path)]) == 2
    assert "add --gpu" in capsys.readouterr().err
