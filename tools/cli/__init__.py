"""The ``sasq`` command line: the parser and ``main`` (``entry``), one module per
subcommand (``commands/``), the flags several commands share (``groups``), flags from a
config's fields (``fields``), argparse types that check numbers where they enter (``types``)
and what a command checks before its work starts (``checks``).

May import every other part of sasq; nothing imports it but ``python -m sasq`` and the
console script.
"""

from sasq.tools.cli.entry import main

__all__ = ["main"]
