"""Opening and parsing files that strangers give: regular files only, capped, shallow JSON.

- ``open_regular``: a fifo, a socket or a device passed as a file would block the command
  forever (a fifo opened for reading waits for a writer) or stream without end
  (``/dev/zero``). The path is opened without blocking and refused unless what was opened
  is a regular file, so there is no window between the check and the read.
- ``read_capped``: the size is checked from the open file before a byte is read, so a
  2 GB (sparse) file claiming to be a calibration cache costs nothing to refuse.
- ``json_loads``: Python's JSON parser recurses once per nesting level; 100,000 levels of
  ``[[[...]]]`` end in ``RecursionError``. That becomes a ``ValueError`` like any other
  malformed JSON, so callers report it as they report a syntax error.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from sasq.errors import UserError

_KIND = {
    stat.S_IFIFO: "a fifo",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _folder(path: str | Path, what: str) -> str:
    article = "an" if what[:1].lower() in "aeiou" else "a"
    return f"{path}: is a folder, not {article} {what} file"


def open_regular(path: str | Path, what: str) -> BinaryIO:
    """``path`` opened for reading in binary; ``UserError`` naming what it is instead when
    it is not a regular file, or when it is missing (``what``: "image", "calibration
    cache" ...). Symlinks are followed, to a regular file only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise UserError(_folder(path, what)) from None
    except NotADirectoryError:  # file.png/: a file where the path needs a folder
        raise UserError(f"{path}: a file is used as a folder in this path") from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):  # Linux opens a folder read-only without complaint
        os.close(fd)
        raise UserError(_folder(path, what))
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = _KIND.get(stat.S_IFMT(mode), "not a plain file")
        raise UserError(f"{path}: is {kind}, not a regular {what} file; refusing to read it")
    os.set_blocking(fd, True)  # a regular file never blocks; later reads behave as usual
    return os.fdopen(fd, "rb")


def read_capped(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, refused in one line, unread, when it holds
    more than ``max_bytes`` (the most a genuine ``what`` can need)."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise UserError(
                f"{path}: {size:,} bytes, more than a {what} can hold ({max_bytes:,}); "
                "refusing to read it"
            )
        data = f.read(max_bytes + 1)  # the file may have grown since fstat
    if len(data) > max_bytes:
        raise UserError(f"{path}: grew past {max_bytes:,} bytes while being read")
    return data


def json_loads(text: str | bytes) -> Any:
    """``json.loads``, with nesting too deep for the parser reported as ``ValueError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to be a sasq file") from None
