"""Re-export of :class:`sasq.errors.UserError` (its home is the package root, so layers
below ``tools`` can raise it too); one line on stderr and exit 2 through the CLI."""

from sasq.errors import UserError

__all__ = ["UserError"]
