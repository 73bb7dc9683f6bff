"""The one exception type a user's mistake raises; the CLI prints it as one line, exit 2.

It lives at the package root so every layer (models included) can raise it without
importing from ``sasq.tools``; ``sasq.errors`` re-exports it for existing imports."""


class UserError(Exception):
    """Bad input from the user (a path, a flag, a file): reported without a traceback."""
