"""scripts/d16_int8_bench.py prepares its folders in one process and times them in another
(--prepare-only, then --bench-only on a quiet machine): the second must rebuild the same
random weights, or the bench refuses the folder as exported from other weights. On a
depth-2 VAR at its first 4 scales (the same script, seconds instead of minutes)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "d16_int8_bench.py"


SMALL = ("--depth", "2", "--scales", "4", "--threads", "1")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args, *SMALL], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_prepare_then_bench_in_two_processes(tmp_path):
    out = str(tmp_path / "d2")
    prep = _run(out, "2", "--prepare-only")
    assert prep.returncode == 0, prep.stderr[-2000:]
    bench = _run(out, "--bench-only", "--rows", "int8", "--repeats", "1", "--no-roofline")
    assert bench.returncode == 0, bench.stderr[-2000:]
    result = json.loads((tmp_path / "d2" / "bench.json").read_text())
    (run,) = result["runs"]
    assert run["batch"] == 1 and list(run["backends"]) == ["ort", "int8"]
    ratio = run["ratios"]["int8/ort"]["e2e"]
    assert math.isfinite(ratio) and 0.05 < ratio < 50
    # other random weights are refused, in one line
    other = _run(out, "--weights-seed", "1", "--bench-only", "--rows", "int8", "--repeats", "1",
                 "--no-roofline")  # fmt: skip
    assert other.returncode != 0 and "exported from different weights" in other.stderr
    assert "Traceback" not in other.stderr
