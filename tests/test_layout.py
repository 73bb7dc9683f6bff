"""The layering rules (docs/architecture.md, "Who imports whom"): nothing below tools/
imports sasq.tools, and the packages import each other without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BELOW_TOOLS = ("models", "quant", "exporter", "calib", "engines", "sasq")
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


# Folder -> package, as pyproject.toml's package-dir installs them.
PACKAGES = {
    "sasq": "sasq",
    "models": "sasq.models",
    "quant": "sasq.quant",
    "exporter": "sasq.exporter",
    "calib": "sasq.calib",
    "engines": "sasq.engines",
    "tools": "sasq.tools",
}


def _package_of(module: str) -> str | None:
    """The sasq package a dotted module name belongs to (root modules: "sasq")."""
    parts = module.split(".")
    if parts[0] != "sasq":
        return None
    sub = ".".join(parts[:2])
    return sub if sub in PACKAGES.values() else "sasq"


def _package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) package -> where; every import counts, those inside functions
    too (a lazy import is still a dependency)."""
    edges: dict[tuple[str, str], list[str]] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in ENTRY_POINTS:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # ``from sasq import progress`` imports the root module sasq.progress
                    names = [node.module] if node.module != "sasq" else ["sasq.x"]
                else:
                    continue
                for name in names:
                    target = _package_of(name)
                    if target is not None and target != package:
                        where = f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                        edges.setdefault((package, target), []).append(where)
    return edges


def _cycle(edges) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_packages_import_each_other_without_a_cycle():
    edges = _package_edges()
    cycle = _cycle(edges)
    if cycle:
        why = [w for a, b in zip(cycle, cycle[1:], strict=False) for w in edges[(a, b)][:3]]
        raise AssertionError(" -> ".join(cycle) + "\n" + "\n".join(why))


def test_the_root_imports_no_other_package():
    """Every layer imports sasq's root modules (errors, files, progress), so they import
    nothing of the layers."""
    assert [e for e in _package_edges() if e[0] == "sasq"] == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}) == ["a", "b", "c", "a"]
    assert _cycle({("a", "b"): [], ("a", "c"): [], ("b", "c"): []}) is None


# tools/ by purpose (tools/__init__.py): which subpackages each may import.
TOOLS_MAY_IMPORT = {
    "report": set(),
    "measure": {"report"},
    "quality": {"report", "measure"},
    "serve": {"report"},
    "train": {"report", "quality"},
    "apps": {"report", "measure", "quality", "serve"},
    "cli": {"report", "measure", "quality", "serve", "train", "apps"},
}


def _exports(sub: str) -> set[str]:
    """The module names a tools subpackage's ``__all__`` lists."""
    tree = ast.parse((ROOT / "tools" / sub / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def test_tools_subpackages_are_the_documented_ones():
    found = {p.name for p in (ROOT / "tools").iterdir() if (p / "__init__.py").is_file()}
    assert found == set(TOOLS_MAY_IMPORT)
    assert not [p.name for p in (ROOT / "tools").glob("*.py") if p.name != "__init__.py"]


def test_tools_subpackages_import_only_what_they_may():
    """A subpackage imports another only if its rule allows, and only the modules that one
    exports (its ``__all__``); the CLI follows the second rule too."""
    offenders = []
    for sub, allowed in TOOLS_MAY_IMPORT.items():
        for path in sorted((ROOT / "tools" / sub).rglob("*.py")):
            for name in _imports(path):
                parts = name.split(".")
                if parts[:2] != ["sasq", "tools"] or len(parts) < 3 or parts[2] == sub:
                    continue
                other = parts[2]
                where = f"{path.relative_to(ROOT)}: {name}"
                if other not in allowed:
                    offenders.append(f"{where} (tools/{sub} may not import tools/{other})")
                elif len(parts) >= 4 and parts[3] not in _exports(other):
                    offenders.append(f"{where} (not in tools/{other}'s __all__)")
    assert not offenders, "\n".join(offenders)


def test_the_tools_rule_sees_a_forbidden_import(tmp_path):
    """The check reads what it should: a measure module importing quality is caught."""
    bad = tmp_path / "m.py"
    bad.write_text("from sasq.tools.quality.evaluate import evaluate\n")
    names = _imports(bad)
    assert "sasq.tools.quality.evaluate" in names
    assert "quality" not in TOOLS_MAY_IMPORT["measure"]
