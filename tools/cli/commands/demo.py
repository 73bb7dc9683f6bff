"""sasq demo: the whole chain on the embedded model, to images and a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from sasq import progress
from sasq.tools.cli import groups

NAME = "demo"
HELP = "run the whole chain on the embedded model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    groups.model(p, files=False)
    groups.timing_threads(p, "the bench's torch and ONNX Runtime intra-op")
    groups.out_folder(p, "out/demo", "images and report")


def run(args: argparse.Namespace) -> int:
    from sasq.tools.apps.demo import run_demo

    report, summary = run_demo(Path(args.out), model_dir=args.model, threads=args.threads)
    print(summary)  # the report holds the tables
    progress.wrote("demo", args.out)
    return 0
