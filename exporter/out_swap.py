"""Writing an export folder to ``--out``: only over an export, whole old or whole new, always.

What may be replaced: a missing or empty folder, or a sasq export (its ``manifest.json``
has sasq's ``format`` and an integer ``format_version``) that holds nothing but the files
its manifest lists. Anything else at ``--out`` (a web app with its own ``manifest.json``, an
export with the user's ``calib.json`` or ``RESULTS.md`` in it, a file, a symlink) is refused
in one line naming what is in the way, and nothing is touched.

How the swap stays atomic. The new export is built in a hidden folder beside ``--out``
(same file system, so renames are atomic): ``.NAME.tmp-XXXX``. Then:

1. ``--out`` missing: one ``rename(tmp, out)``.
2. ``--out`` an old export: one ``renameat2(tmp, out, RENAME_EXCHANGE)`` (Linux >= 3.15,
   ext4/xfs/btrfs/tmpfs): the kernel swaps the two names in one step, so every observer
   sees the whole old or the whole new folder at ``--out``, never neither. The old export is
   now at the hidden name; its listed files are removed, then the folder. A kill anywhere
   leaves ``--out`` whole and at most a hidden leftover.
3. Where the exchange is not supported (another OS or file system): ``rename(out, .NAME.old-
   XXXX)`` then ``rename(tmp, out)``. A kill between the two leaves ``--out`` missing for an
   instant that the next run repairs: it restores the old export from ``.NAME.old-*``.

Leftovers. Every hidden folder a run makes or moves an export to gets a marker file beside
it, ``.NAME.tmp-XXXX.sasq-made`` (made with O_EXCL before the folder is used, removed
after it is gone), and each run holds an exclusive ``flock`` on the hidden folders it is
using (the lock dies with the process, however it ends). At the start of every run, the
marked ``.NAME.tmp-*`` / ``.NAME.old-*`` folders of the same ``--out`` that nobody holds
are leftovers of interrupted runs: if ``--out`` is missing the newest ``.old-*`` is renamed
back first, then the rest is removed. A folder without sasq's marker is the user's, whatever
its name (``.NAME.tmp-notes``, ``.NAME.old-backup``): never removed, never renamed. The
marker sits beside the folder, not in it, because the atomic exchange swaps folders whole:
a marker inside would travel into ``--out``. Folders a live run holds are left alone, so
two runs at once do not destroy each other's work.

A file that appears in the old export during the instant of the swap is not deleted: the
old folder is then kept, visibly, as ``NAME.displaced-XXXX`` beside ``--out``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sasq.errors import UserError
from sasq.plain_names import is_plain_name
from sasq.untrusted import json_loads, read_capped

MANIFEST = "manifest.json"
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-\w+")
MARK_SUFFIX = ".sasq-made"
_MARK_TEXT = (
    "sasq made the folder named as this file without '.sasq-made' while replacing an "
    "export; an interrupted run's folder is removed by the next run, then this file\n"
)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


# ----- what may be replaced -----


def _manifest_files(folder: Path) -> set[str] | None:
    """The file names a sasq export's manifest lists, or None if it is not one."""
    from sasq.exporter.manifest import FORMAT, MAX_MANIFEST_BYTES

    try:  # a stranger's folder: a fifo, a huge or a deeply nested manifest.json is not ours
        d = json_loads(read_capped(folder / MANIFEST, "manifest", MAX_MANIFEST_BYTES))
    except (OSError, ValueError, UserError):
        return None

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        return None
    v, files = d.get("format_version"), d.get("files")
    if isinstance(v, bool) or not isinstance(v, int) or not isinstance(files, dict):
        return None
    return {n for n in files if is_plain_name(n)}


def _names(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(sorted(items)[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_replaceable(out: Path) -> None:
    """Nothing if ``out`` may be replaced by a new export, else one-line ``UserError``."""
    if out.is_symlink():
        raise UserError(f"{out}: is a symlink; give the folder itself as `out`", param="out")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; refusing to replace it")
    entries = os.listdir(out)
    if not entries:
        return
    listed = _manifest_files(out) if MANIFEST in entries else None
    if listed is None:
        raise UserError(
            f"{out}: not empty and not a sasq export (holds {_names(entries)}); "
            "refusing to replace it"
        )
    listed.add(MANIFEST)
    extra = [e for e in entries if e not in listed or not (out / e).is_file()]
    if extra:
        raise UserError(
            f"{out}: holds {_names(extra)}, which its manifest does not list; move "
            "them out or choose another `out` (nothing was changed)",
            param="out",
        )


# ----- locks and leftovers -----


def _lock(folder: Path) -> int | None:
    """An fd holding an exclusive flock on ``folder``, or None if another process holds it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _marker(folder: Path) -> Path:
    return folder.with_name(folder.name + MARK_SUFFIX)


def _mark(folder: Path) -> None:
    """Say that ``folder`` is sasq's: a new marker file beside it (never a user's file)."""
    fd = os.open(_marker(folder), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(_MARK_TEXT)


def _unmark(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_marker(folder))


def _is_marked(folder: Path) -> bool:
    """Checked before anything is removed or renamed: the marker is a regular file (not a
    link), with sasq's words in it."""
    try:
        fd = os.open(_marker(folder), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return f.read(len(_MARK_TEXT) + 1) == _MARK_TEXT.encode()


def recover(out: Path) -> None:
    """Restore ``out`` from an interrupted swap if it is missing; remove unheld leftovers.
    Only folders with sasq's marker beside them are touched (then their markers)."""
    found: list[tuple[Path, str, int]] = []
    strays: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(out.parent):
            if entry.name.endswith(MARK_SUFFIX):  # a marker whose folder is already gone
                folder = Path(entry.path[: -len(MARK_SUFFIX)])
                m = _LEFTOVER.fullmatch(folder.name)
                if m and m["name"] == out.name and not os.path.lexists(folder):
                    strays.append(folder)
                continue
            m = _LEFTOVER.fullmatch(entry.name)
            if not (m and m["name"] == out.name and entry.is_dir(follow_symlinks=False)):
                continue
            if not _is_marked(Path(entry.path)):
                continue  # the user's folder, whatever its name
            fd = _lock(Path(entry.path))
            if fd is not None:
                found.append((Path(entry.path), m["kind"], fd))
    try:
        if not out.exists() and not out.is_symlink():
            olds = [p for p, kind, _ in found if kind == "old"]  # the moved-away --out
            if olds:
                newest = max(olds, key=lambda p: p.stat().st_ctime)  # rename sets ctime
                os.rename(newest, out)
                _unmark(newest)
                found = [f for f in found if f[0] != newest]
        for path, _, _ in found:
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                _unmark(path)
        for folder in strays:
            if _is_marked(folder):
                _unmark(folder)
    finally:
        for _, _, fd in found:
            os.close(fd)


# ----- the swap -----


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b``; False where the system cannot."""
    fn = _renameat2() if sys.platform.startswith("linux") else None
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _discard_old(old: Path, out: Path) -> None:
    """Remove a replaced export: its listed files, then the folder. Anything else found in
    it (arrived during the swap) is kept, with the folder, as ``NAME.displaced-XXXX``."""
    listed = (_manifest_files(old) or set()) | {MANIFEST}
    for name in os.listdir(old):
        p = old / name
        if name in listed and p.is_file() and not p.is_symlink():
            p.unlink()
    try:
        old.rmdir()
    except OSError:
        keep = Path(tempfile.mkdtemp(prefix=f"{out.name}.displaced-", dir=out.parent))
        os.replace(old, keep)
        print(f"sasq: files found in the replaced export were kept in {keep}", file=sys.stderr)


def install(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out`` (see the module docstring)."""
    check_replaceable(out)  # again: the folder may have changed while the export was built
    if not out.exists():
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        _discard_old(tmp, out)
        return
    fd = _lock(out)  # so a concurrent run's recovery leaves the moved-away export alone
    try:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)  # only the unique name is needed; rename needs it free
        _mark(old)  # before the rename: a kill between the renames is then repaired
        os.rename(out, old)
        os.rename(tmp, out)
        _discard_old(old, out)
        _unmark(old)
    finally:
        if fd is not None:
            os.close(fd)


def _absolute(out_dir: str | Path) -> Path:
    out = Path(os.path.abspath(out_dir))  # '.', '..' and trailing slashes resolved, links kept
    if out.parent == out:
        raise UserError(f"{out_dir}: cannot replace the root folder")
    return out


@contextlib.contextmanager
def staged_export(out_dir: str | Path) -> Iterator[Path]:
    """A private folder beside ``out_dir`` to build an export in; swapped into place when
    the block succeeds, removed when it fails, so nothing half-written is ever seen."""
    out = _absolute(out_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out.parent}: {e.strerror}") from None
    recover(out)
    check_replaceable(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise UserError(f"cannot write beside {out}: {e.strerror}") from None
    fd = _lock(tmp)
    try:
        _mark(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary folder
        yield tmp
        install(tmp, out)  # the tmp name now holds nothing, or the old export to discard
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)
        if not os.path.lexists(tmp):
            _unmark(tmp)
