"""sasq loadtest: latency percentiles and images/s of a sasq server per concurrency level."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sasq.errors import UserError
from sasq.tools.cli import groups
from sasq.tools.cli import types as T

NAME = "loadtest"
HELP = "load-test a sasq server: latency percentiles and images/s per concurrency level"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sasq.tools.cli.fields import option
    from sasq.tools.serve.config import LoadConfig

    p.add_argument("url", help="server URL, e.g. http://127.0.0.1:8000 (loopback only)")
    option(
        p,
        "--concurrency",
        LoadConfig,
        "concurrency",
        type=T.int_list(1, 1024),
        help="comma list of concurrent clients, one level after another; default: 1,4,16,32",
    )
    option(
        p,
        "--duration",
        LoadConfig,
        "duration_s",
        type=T.float_in(0.0, 3600.0, lo_open=True),
        help="seconds per concurrency level (also ends at --requests); default: 20",
    )
    option(
        p,
        "--requests",
        LoadConfig,
        "requests",
        type=T.int_in(1, 10**7),
        help="most requests per concurrency level (also ends at --duration); default: 1000",
    )
    option(
        p,
        "--warmup",
        LoadConfig,
        "warmup",
        type=T.int_in(0, 10_000),
        help="unmeasured requests before each level; default: 4",
    )
    groups.seed(p, LoadConfig.seed, "first request's seed; default: 0")
    option(
        p,
        "--timeout",
        LoadConfig,
        "timeout_s",
        type=T.float_in(0.0, 3600.0, lo_open=True),
        help="seconds a single request may take before it counts as failed; default: 60",
    )
    option(
        p,
        "--malformed",
        LoadConfig,
        "malformed",
        type=T.fraction,
        help="share of requests sent malformed (unknown class, wrong dtype), each of which "
        "must fail while every valid one succeeds: a soak; default: 0",
    )
    groups.out_folder(p, None, "loadtest.json, loadtest.md and loadtest.png")


def run(args: argparse.Namespace) -> int:
    from sasq.tools.serve.config import LoadConfig
    from sasq.tools.serve.loadtest import run_loadtest, write_report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; --out needs a folder")
    lc = LoadConfig(
        url=args.url,
        concurrency=tuple(args.concurrency),
        duration_s=args.duration,
        requests=args.requests,
        warmup=args.warmup,
        seed=args.seed,
        timeout_s=args.timeout,
        malformed=args.malformed,
    )
    r = run_loadtest(lc)
    paths = write_report(r, out)
    print(json.dumps({"out": [str(p) for p in paths], "levels": r["levels"]}))
    failed = sum(lv["failed"] for lv in r["levels"])
    accepted = sum(lv["malformed"]["accepted"] for lv in r["levels"])
    ok = failed == 0 and accepted == 0
    print(
        f"loadtest: {'PASSED' if ok else 'FAILED'} ({failed} failed valid requests, "
        f"{accepted} malformed requests answered as if valid)"
    )
    return 0 if ok else 1
