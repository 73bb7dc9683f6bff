"""The one exception type a user's mistake raises; the CLI prints it as one line, exit 2.

It lives at the package root so every layer (models included) can raise it without
importing from ``sasq.tools``; the CLI prints it in one line.

The layers below the CLI word their messages in the library's terms (``num_samples``, an
export folder), never a command-line flag: the same error reaches a Python caller, who
never typed one. ``param`` names the library parameter at fault, so the CLI can add the
flag that sets it."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a path, a value, a file): reported without a traceback.
    ``param``: the library parameter (a config field or argument name) that was wrong, if
    one was; None when the fault is in a file or the machine."""

    def __init__(self, *args: object, param: str | None = None):
        super().__init__(*args)
        self.param = param
