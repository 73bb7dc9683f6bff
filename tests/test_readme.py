"""README.md: every ```python block runs as written, and no link leaves the repository.
A block fenced ```py (the serving client) needs a running server and is not run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Markdown links and images: [text](target); a target may carry a #fragment.
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def python_blocks(text: str) -> list[str]:
    return _BLOCK.findall(text)


def test_readme_has_python_blocks():
    assert python_blocks(README.read_text()), "the README's Python API example went missing"


@pytest.mark.parametrize("i", range(len(python_blocks(README.read_text()))))
def test_python_block_runs(i, tmp_path, monkeypatch):
    """Each block runs in a fresh namespace in an empty folder (files it writes land there)."""
    code = python_blocks(README.read_text())[i]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block {i}", "exec"), {"__name__": "__readme__"})


def test_no_link_leaves_the_repository():
    """A clone has only this repository: no ``../`` target, no pointer to shared/ notes."""
    text = README.read_text()
    targets = _LINK.findall(text)
    assert not [t for t in targets if t.startswith("..") or "/../" in t]
    assert "../" not in text
    assert "shared/DESIGN.md" not in text


def test_local_links_exist():
    """Relative links name files of the repository (anchors and URLs are not checked)."""
    root = README.parent
    for t in _LINK.findall(README.read_text()):
        if t.startswith(("#", "http://", "https://", "mailto:")):
            continue
        assert (root / t.split("#")[0]).exists(), t
