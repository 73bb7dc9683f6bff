"""sasq.progress: bars and stage lines on a terminal only, --quiet, the closing line."""

from __future__ import annotations

import logging

import pytest

from sasq import progress
from sasq.tools.cli import main


@pytest.fixture(autouse=True)
def _not_quiet():
    yield
    progress.set_quiet(False)


def test_nothing_but_the_wrote_line_off_a_terminal(capsys):
    assert not progress.shown()  # pytest's stderr is not a terminal
    progress.stage("exporting")
    assert list(progress.bar([1, 2], "x")) == [1, 2]
    progress.wrote("export", "out/onnx_fp")
    assert capsys.readouterr().err == "sasq export: wrote out/onnx_fp\n"


def test_stage_lines_on_a_terminal_and_quiet_silences_all(capsys, monkeypatch):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    progress.stage("calibrate: ranges")
    assert capsys.readouterr().err == "calibrate: ranges ...\n"
    progress.set_quiet(True)
    progress.stage("calibrate: ranges")
    progress.wrote("calibrate", "c.json")
    assert capsys.readouterr().err == ""


def test_quiet_before_or_after_the_command(capsys):
    assert main(["--quiet", "lint", "nope.onnx"]) == 2
    assert main(["lint", "-q", "nope.onnx"]) == 2
    assert "no such ONNX file" in capsys.readouterr().err


def test_quiet_ort_logging_restores_the_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with progress.quiet_ort_logging():
        logging.warning("Axis 1 is out-of-range for weight")  # would install a handler
        assert root.level == logging.ERROR
    assert root.handlers == handlers and root.level == level


def test_python_warnings_print_as_one_line_and_main_restores_the_hook(capsys):
    import warnings

    from sasq.tools.cli.entry import _one_line_warning

    _one_line_warning("calibrate")("8 samples cover\\nonly 8", UserWarning, "/x/f.py", 12)
    assert capsys.readouterr().err == "sasq calibrate: warning: 8 samples cover\\nonly 8\n"
    _one_line_warning("calibrate")("8 samples cover\nonly 8", UserWarning, "/x/f.py", 12)
    assert capsys.readouterr().err == "sasq calibrate: warning: 8 samples cover only 8\n"
    before = warnings.showwarning
    assert main(["lint", "nope.onnx"]) == 2
    assert warnings.showwarning is before
