"""How long the CLI takes to answer before any work: ``sasq --help``, ``sasq --version``, a
command's ``--help`` and an argument error, each run N times in a fresh process.

    python scripts/cli_startup.py [--repeats 10] [--out out/cli_startup.json]

Prints a table (min / median / max ms per line) and writes the numbers as JSON. A
benchmark, not a test: the times depend on the machine and its load (recorded beside
them), and the goal (under 1 s on a quiet 2-core machine for ``--help``, ``--version``
and the top level's errors) is read off the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

LINES = [
    ["--help"],
    ["--version"],
    ["no-such-command"],
    ["lint", "--help"],
    ["lint", "--min-opset", "0", "x.onnx"],
    ["quantize", "--help"],
    ["quantize", "--bits", "W9A9"],
    ["generate", "--n", "0"],
    ["export", "--opset", "99"],
    ["build", "--opt-level", "9"],
    ["bench", "--repeats", "0"],
    ["serve", "--port", "-1"],
]


def time_line(args: list[str], repeats: int) -> list[float]:
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sasq", *args], capture_output=True, check=False)
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default="out/cli_startup.json")
    a = ap.parse_args()
    rows = []
    for line in LINES:
        ms = time_line(line, a.repeats)
        rows.append({"line": "sasq " + " ".join(line), "min_ms": min(ms),
                     "median_ms": statistics.median(ms), "max_ms": max(ms)})  # fmt: skip
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_1min": os.getloadavg()[0], "python": platform.python_version()},
        "repeats": a.repeats,
        "rows": rows,
    }  # fmt: skip
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| line | min ms | median ms | max ms |  (load {result['machine']['loadavg_1min']:.2f})")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| `{r['line']}` | {r['min_ms']:.0f} | {r['median_ms']:.0f} | {r['max_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
