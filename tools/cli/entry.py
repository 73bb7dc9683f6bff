"""The ``sasq`` parser and ``main``: one subparser per module of ``commands/``.

Each command is a thin function over the Python API. A user's mistake (``UserError``, a
bad checkpoint, a file system error on a path the user gave) prints one line and exits 2;
anything else is a bug and keeps its traceback. Only the command on the line gets its
flags added (the others are names and summaries), so ``sasq --help`` and an argument error
answer without importing torch, onnx or ONNX Runtime.
"""

from __future__ import annotations

import argparse
import errno
import logging
import re
import sys
import warnings

from sasq import progress
from sasq.errors import UserError
from sasq.tools.cli import commands

EXIT_USER_ERROR = 2
ORT_MISSING = (
    "ONNX Runtime is not installed: pip install 'sasq[cpu]' (or 'sasq[gpu]' on an NVIDIA machine)"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default at the end of its help, once: not where the help already
    says "default" (it explains it there), and not for defaults that mean "not given"
    (None, False, an empty list, SUPPRESS), required options or positionals. Tuples show
    as the comma lists the parser reads (``1,8``)."""

    _SAYS_DEFAULT = re.compile(r"\bdefault\b|%\(default\)", re.IGNORECASE)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        d = action.default
        if (
            not action.option_strings
            or action.required
            or d is None
            or d is False
            or d is argparse.SUPPRESS
            or (isinstance(d, (list, tuple)) and not d)
            or self._SAYS_DEFAULT.search(help_)
        ):
            return help_
        shown = (
            ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in d)
            if isinstance(d, (list, tuple))
            else str(d)
        )
        return f"{help_} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage dump, the hint to use --help instead; every
    parser (the top level and each subcommand) shows its options' defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# The layers below the CLI name the parameter at fault in backticks (sasq.errors); the CLI
# shows the flag that sets it, and names the flag of ``UserError.param`` if the text did not.
PARAM_FLAGS = {
    "num_samples": "--n", "GPSConfig.num_samples": "--gps-n", "n": "--n", "batch": "--batch",
    "cls": "--class", "top_k": "--top-k", "backend": "--backend", "onnx_dir": "--onnx DIR",
    "engine": "--engine PLAN", "batch_range": "--batch-range", "rebuild": "--rebuild",
    "out": "--out", "precision": "--precision", "target": "--target", "rest": "--rest",
    "static_per_step": "--per-step", "opset": "--opset", "vae": "--vae", "var": "--var",
    "model_dir": "--model DIR", "model": "--model", "intra_op_threads": "--threads",
}  # fmt: skip


def _flagged(e: Exception) -> str:
    text = re.sub(r"`([\w.]+)`", lambda m: PARAM_FLAGS.get(m[1], m[1]), str(e))
    flag = PARAM_FLAGS.get(getattr(e, "param", None) or "")
    return text if flag is None or flag in text else f"{text} ({flag})"


def _one_line(text: str) -> str:
    """A message quoting a stranger's file could hold a newline: keep the error one line."""
    return " ".join(text.split())


_QUIET_HELP = (
    "no progress bars or stage lines (shown on a terminal only) and no closing 'wrote' line "
    "on stderr; results and errors still print; default: off"
)


def _chosen(argv: list[str]) -> str | None:
    """The subcommand on the line: the first word that is not an option (the top level's
    options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; every subcommand's flags, or with ``argv`` only those of the command on
    that line (the rest need not import their configs)."""
    parser = _Parser(
        prog="sasq",
        description="Quantized deployment of VAR image models: export, calibrate, quantize "
        "(shift-and-sum int8), run on ONNX Runtime / TensorRT, benchmark and evaluate.",
    )
    from sasq import __version__

    parser.add_argument("--version", action="version", version=f"sasq {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    chosen = _chosen(argv) if argv is not None else None
    for name, cmd in commands.all_commands().items():
        p = sub.add_parser(name, help=cmd.HELP, description=cmd.HELP)
        if argv is None or name == chosen:
            cmd.add_arguments(p)
        # also after the command (sasq export -q ...); SUPPRESS keeps a leading -q
        p.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP
        )
        p.set_defaults(run=cmd.run)
    return parser


def _one_line_warnings() -> None:
    """sasq's own warnings (e.g. a checkpoint tolerated as the official loader does) print
    as one line on stderr, like its errors."""
    log = logging.getLogger("sasq")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("sasq: warning: %(message)s"))
        log.addHandler(handler)


def _one_line_warning(command: str):
    """Python warnings (``warnings.warn``: "8 samples cover only 8 of 10 classes") as one
    line naming the command, not the file, line and source of the call."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"sasq {command}: warning: {_one_line(str(message))}", file=file or sys.stderr)

    return show


def _os_error(e: OSError, args: argparse.Namespace) -> str:
    """One line for a refusal of the file system. A full disk is the disk being written:
    a copy that runs out of space (shutil's sendfile path) reports the file it was reading
    as ``filename`` and the one it was writing as ``filename2``, so the line named the
    read-only input; it names ``--out`` instead (or the file written, without one)."""
    why = e.strerror or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        out = getattr(args, "out", None)
        if out is not None:
            return f"{out}: {why} while writing --out"
        if e.filename2:
            return f"{e.filename2}: {why}"
    return f"{e.filename}: {why}" if e.filename else why


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    _one_line_warnings()
    progress.set_quiet(args.quiet)
    try:
        with warnings.catch_warnings():  # restores showwarning on the way out
            warnings.showwarning = _one_line_warning(args.command)
            return args.run(args)
    except UserError as e:
        print(f"sasq {args.command}: error: {_one_line(_flagged(e))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as e:
        if e.name != "onnxruntime":
            raise
        # sasq[cpu] or sasq[gpu]: the two ONNX Runtime wheels cannot share one environment
        print(f"sasq {args.command}: error: {ORT_MISSING}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # the file system said no: a path, permissions, a full disk
        print(f"sasq {args.command}: error: {_os_error(e, args)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print(f"sasq {args.command}: error: out of memory", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"sasq {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
