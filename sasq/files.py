"""Writing and hashing files: the one atomic writer and the one file sha256 of sasq.

Every output sasq writes (manifests, calibration caches, checkpoints, token files, engine
plans, reports) goes through ``atomic_path``: the bytes land under a hidden temporary name
in the destination's folder (same file system, so the rename is atomic), are flushed and
fsync'ed, and only then ``os.replace`` puts them in place. A crash or an exception leaves
the old file or none, never half a file, and the temporary file is removed on failure.

The temporary file comes from ``tempfile.mkstemp``, which creates it 0600; a result file
is an ordinary file, so before the rename its mode becomes ``0o666 & ~umask``, what
``open(path, "w")`` would have given it. (A cache that only its writer could read was once
the odd one out among the outputs of one command.)

Hidden temporary names (a leading dot) keep half-written files out of the listings that
skip dotfiles, such as an export folder's manifest entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_CHUNK = 1 << 22


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks (step graphs run to gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    # os.umask can only be read by setting it; put it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new ordinary file gets under the current umask."""
    return 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a path itself
    (``np.savez``, ``onnx.save``, safetensors, PIL, a TensorRT plan); when the block ends
    normally the file is fsync'ed, given the umask's mode and renamed onto ``path``.

    ``suffix`` ends the temporary name, for writers that append their own extension to a
    name without it (``np.savez`` adds ``.npz``). On an exception the temporary file is
    removed and ``path`` is left as it was."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may not have synced: do it here
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON plus a newline, written atomically; values JSON cannot hold
    (a Path, an enum) are written as their ``str``, as reports want them."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
