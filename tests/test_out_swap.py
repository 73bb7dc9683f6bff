"""Replacing --out (``exporter.out_swap``): only pure exports, and whole old or whole new
whenever the writing process is killed, at every step, with leftovers recovered next run.

A kill is real: the run happens in a forked child that ``os._exit``s at the chosen step,
so no ``finally`` or ``except`` of the code under test gets to clean up.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from sasq.errors import UserError
from sasq.exporter import out_swap
from sasq.exporter.manifest import FORMAT, FORMAT_VERSION

FILES = ("step.onnx", "decoder.onnx", "next_0.onnx")


def write_export(folder: Path, tag: str) -> None:
    """A small export-shaped folder: every file holds ``tag``, the manifest lists them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in FILES:
        data = f"{tag}:{name}".encode()
        (folder / name).write_bytes(data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "files": files, "tag": tag}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def tag_of(folder: Path) -> str | None:
    """The tag of a whole export at ``folder``; None if it is missing or not whole."""
    try:
        m = json.loads((folder / "manifest.json").read_text())
        names = sorted(os.listdir(folder))
    except (OSError, ValueError):
        return None
    if names != sorted([*FILES, "manifest.json"]):
        return None
    ok = all((folder / n).read_bytes() == f"{m['tag']}:{n}".encode() for n in FILES)
    return m["tag"] if ok else None


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def replace(out: Path, tag: str) -> None:
    with out_swap.staged_export(out) as tmp:
        write_export(tmp, tag)


def killed_at(step: str, out: Path, tag: str, exchange: bool) -> None:
    """Replace ``out`` by export ``tag`` in a child process killed at ``step``."""
    pid = os.fork()
    if pid == 0:  # the child: patch its own copy of the module, then die mid-way
        try:
            _arm(step, exchange)
            with out_swap.staged_export(out) as tmp:
                write_export(tmp, tag)
                if step == "building":
                    (tmp / FILES[0]).unlink()
                    os._exit(9)
        finally:
            os._exit(0 if step == "never" else 3)  # 3: the kill point was not reached
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == (0 if step == "never" else 9), "kill point not reached"


def _arm(step: str, exchange: bool) -> None:
    real_exchange, real_rename, real_discard = out_swap._exchange, os.rename, out_swap._discard_old
    renames = []

    def exchange_then_die(a, b):
        if not exchange:
            return False  # as on a system without renameat2: the two-rename path
        ok = real_exchange(a, b)
        if step == "after exchange":
            os._exit(9)
        return ok

    def rename(a, b):
        real_rename(a, b)
        renames.append(b)
        if step == "between renames" and len(renames) == 1:
            os._exit(9)

    def discard(old, out):
        if step == "discarding":
            (old / FILES[1]).unlink()
            os._exit(9)
        real_discard(old, out)
        if step == "after discard":
            os._exit(9)

    out_swap._exchange, out_swap._discard_old = exchange_then_die, discard
    os.rename = rename


STEPS = ["building", "after exchange", "discarding", "after discard", "never"]
FALLBACK_STEPS = ["building", "between renames", "discarding", "after discard", "never"]


@pytest.mark.parametrize(
    "exchange,step",
    [(True, s) for s in STEPS] + [(False, s) for s in FALLBACK_STEPS],
)
def test_a_kill_at_any_step_loses_neither_export(tmp_path, exchange, step):
    out = tmp_path / "out"
    write_export(out, "old")
    killed_at(step, out, "new", exchange)
    now = tag_of(out)
    if exchange or step != "between renames":
        assert now in ("old", "new")  # at every instant: the whole old or the whole new
    else:
        assert now is None and any(".old-" in n for n in leftovers(out))
    # The next run repairs and cleans, then replaces as usual.
    out_swap.recover(out)
    assert tag_of(out) == (now or "old") and leftovers(out) == []
    replace(out, "newer")
    assert tag_of(out) == "newer" and leftovers(out) == []


def test_the_atomic_exchange_is_what_runs_here(tmp_path):
    """On Linux file systems with renameat2 the swap is one step (the fallback is tested
    above by disabling it)."""
    a, b = tmp_path / "a", tmp_path / "b"
    write_export(a, "A")
    write_export(b, "B")
    assert out_swap._exchange(a, b)
    assert (tag_of(a), tag_of(b)) == ("B", "A")


def test_a_live_runs_folders_are_left_alone(tmp_path):
    out = tmp_path / "out"
    write_export(out, "old")
    live = tmp_path / ".out.tmp-live"
    write_export(live, "being built")
    dead = tmp_path / ".out.tmp-dead"
    write_export(dead, "abandoned")
    for folder in (live, dead):  # as staged_export marks what it makes
        out_swap._mark(folder)
    other = tmp_path / ".outer.tmp-x"  # another --out's leftover: not this run's business
    other.mkdir()
    out_swap._mark(other)
    fd = out_swap._lock(live)
    try:
        out_swap.recover(out)
        assert leftovers(out) == [".out.tmp-live", ".out.tmp-live.sasq-made"] and other.is_dir()
    finally:
        os.close(fd)
    out_swap.recover(out)
    assert leftovers(out) == [] and tag_of(out) == "old"


def test_folders_sasq_did_not_make_are_never_touched(tmp_path):
    """A user's folders named like leftovers, one of them a whole export (a backup), and
    a marker that is not sasq's (a symlink to a copy of its words): recovery leaves them
    all as they are, and does not rename the backup into a missing --out."""
    out, out2 = tmp_path / "qq", tmp_path / "qq2"
    write_export(out, "old")
    notes, backup, mine = (
        tmp_path / ".qq.tmp-notes",
        tmp_path / ".qq.old-backup",
        tmp_path / ".qq2.old-mine",
    )
    for folder in (notes, backup, mine):
        write_export(folder, folder.name)
    words = tmp_path / "words"
    words.write_text(out_swap._MARK_TEXT)
    out_swap._marker(notes).symlink_to(words)
    before = {p.name: sorted(os.listdir(p)) for p in (notes, backup, mine)}
    replace(out, "new")
    out_swap.recover(out2)
    assert tag_of(out) == "new" and not out2.exists()
    assert {p.name: sorted(os.listdir(p)) for p in (notes, backup, mine)} == before
    assert [tag_of(p) for p in (notes, backup, mine)] == [p.name for p in (notes, backup, mine)]
    assert out_swap._marker(notes).is_symlink() and not out_swap._is_marked(notes)


def test_what_may_be_replaced(tmp_path):
    out = tmp_path / "out"
    replace(out, "first")  # missing: created
    assert tag_of(out) == "first"
    (tmp_path / "empty").mkdir()
    replace(tmp_path / "empty", "e")  # an empty folder: replaced
    assert tag_of(tmp_path / "empty") == "e"
    old_format = tmp_path / "v1"
    write_export(old_format, "v1")
    manifest = json.loads((old_format / "manifest.json").read_text()) | {"format_version": 1}
    (old_format / "manifest.json").write_text(json.dumps(manifest))
    replace(old_format, "v2")  # an export of an older format version: replaced
    assert tag_of(old_format) == "v2"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds notes.txt, which its manifest does not list"):
        replace(out, "second")
    assert (out / "notes.txt").read_text() == "mine" and leftovers(out) == []
    foreign = tmp_path / "app"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"format": "web-app"}))
    with pytest.raises(UserError, match="not a sasq export"):
        replace(foreign, "x")
    assert os.listdir(foreign) == ["manifest.json"]


def test_a_failed_build_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    write_export(out, "old")
    with pytest.raises(RuntimeError, match="boom"), out_swap.staged_export(out) as tmp:
        write_export(tmp, "new")
        raise RuntimeError("boom")
    assert tag_of(out) == "old" and leftovers(out) == []


def test_files_that_arrive_during_the_swap_are_kept(tmp_path, capfd):
    """The old export is deleted file by file from its own listing; what it does not list
    (a file dropped in during the instant of the swap) survives, visibly."""
    out, old = tmp_path / "out", tmp_path / ".out.tmp-x"
    write_export(old, "old")
    (old / "RESULTS.md").write_text("mine")
    out_swap._discard_old(old, out)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.displaced-")]
    assert len(kept) == 1 and os.listdir(kept[0]) == ["RESULTS.md"]
    assert "kept in" in capfd.readouterr().err
