"""The one exception type a user's mistake raises; the CLI prints it as one line, exit 2."""


class UserError(Exception):
    """Bad input from the user (a path, a flag, a file): reported without a traceback."""
