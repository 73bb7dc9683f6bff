"""Writing result files so a crash never leaves a half-written one: temporary name, rename."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_report(
    result: dict, out_dir: Path, stem: str, to_markdown: Callable[[dict], str]
) -> tuple[Path, Path]:
    """``{stem}.json`` and ``{stem}.md`` of a result in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return (
        write_json(out_dir / f"{stem}.json", result),
        write_text(out_dir / f"{stem}.md", to_markdown(result)),
    )
