"""The layering rule: nothing below tools/ imports sasq.tools (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BELOW_TOOLS = ("models", "exporter", "calib", "engines", "sasq")
ENTRY_POINTS = {ROOT / "sasq" / "__main__.py"}  # ``python -m sasq`` runs the CLI


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_nothing_below_tools_imports_tools():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for folder in BELOW_TOOLS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path not in ENTRY_POINTS
        for name in _imports(path)
        if name == "sasq.tools" or name.startswith("sasq.tools.")
    ]
    assert not offenders, offenders
