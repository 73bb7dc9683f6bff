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
