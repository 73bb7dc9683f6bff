"""A result as the pair every command writes: ``{stem}.json`` (the numbers) beside
``{stem}.md`` (the readable table), each written atomically (``sasq.files``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sasq.files import write_json, write_text


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
