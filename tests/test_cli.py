"""The sasq CLI: parser, help, generation to a grid, and one-line errors for user mistakes."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sasq.tools.cli.commands import all_commands
from sasq.tools.cli.entry import build_parser, main

COMMANDS = all_commands()


def test_every_subcommand_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([name, "--help"])
        assert e.value.code == 0
        assert name in capsys.readouterr().out


def _subparsers() -> dict:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **sub.choices}


def _shows_default(action: argparse.Action) -> bool:
    d = action.default
    return not (
        action.required
        or d is None
        or d is False
        or d is argparse.SUPPRESS
        or (isinstance(d, (list, tuple)) and not d)
    )


def test_every_option_has_help_and_shows_its_default():
    """Each parser's --help renders (a stray % would crash it), every option except -h says
    what it does, and every option with a real default shows it exactly once."""
    for name, p in _subparsers().items():
        text = p.format_help()
        assert text
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"sasq {name} {'/'.join(a.option_strings) or a.dest}"
            assert a.help and a.help.strip(), f"{where} has no help"
            if a.option_strings and _shows_default(a):
                rendered = p._get_formatter()._expand_help(a)
                n = re.findall(r"\bdefault\b", rendered, re.I)
                assert n, f"{where}: default {a.default!r} not shown: {rendered}"
                assert rendered.count("(default: ") <= 1, f"{where}: {rendered}"


def test_help_defaults_match_the_code():
    """Defaults the help spells out are the ones the code uses."""
    from sasq.tools.measure.steadiness import default_threads
    from sasq.tools.quality.config import EvalConfig

    subs = _subparsers()
    ev = subs["eval"].parse_args([])
    assert ev.per_class == EvalConfig().per_class
    assert f"default {EvalConfig().per_class}:" in " ".join(subs["eval"].format_help().split())
    assert ev.bits == ",".join(EvalConfig().bits)
    for cmd in ("bench", "demo"):
        assert subs[cmd].parse_args([]).threads == default_threads() >= 1
    assert subs["profile"].parse_args(["--onnx", "x"]).threads == default_threads()
    assert subs["generate"].parse_args(["--out", "x.png"]).threads == 0  # all cores


def test_top_level_help_renders(capsys):
    assert main(["--help"]) == 0
    assert "compare" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "generate" in capsys.readouterr().out


def test_generate_writes_grid_and_tokens_deterministically(tiny_model_dir, tmp_path):
    args = ["generate", "--model", str(tiny_model_dir), "--n", "6", "--seed", "3"]
    assert (
        main([*args, "--out", str(tmp_path / "a.png"), "--save-tokens", str(tmp_path / "a.npz")])
        == 0
    )
    assert (
        main([*args, "--out", str(tmp_path / "b.png"), "--save-tokens", str(tmp_path / "b.npz")])
        == 0
    )
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert sorted(a.files) == ["labels", "scale0", "scale1", "scale2", "scale3"]
    for k in a.files:
        assert np.array_equal(a[k], b[k])
    assert a["scale3"].shape == (6, 16)
    assert Image.open(tmp_path / "a.png").size[0] > 6 * 16
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--class", "99"], "--class must be in 0..9"),
        (["--n", "0"], "argument --n: must be at least 1"),
        (["--backend", "nope"], "invalid choice: 'nope'"),
        (["--backend", "ort"], "--backend ort needs --onnx DIR"),
        (["--n", "x"], "argument --n: invalid integer"),
    ],
)
def test_user_errors_are_one_line(tiny_model_dir, tmp_path, capsys, extra, needle):
    rc = main(
        ["generate", "--model", str(tiny_model_dir), "--out", str(tmp_path / "g.png"), *extra]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.png").exists()


def test_missing_model_folder_is_one_line(tmp_path, capsys):
    assert (
        main(["generate", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "g.png")]) == 2
    )
    assert "not a sasq model folder" in capsys.readouterr().err


@pytest.mark.slow  # 5.5s on a busy 2-core machine
def test_pickled_checkpoint_refused_through_the_cli(tiny_model_dir, tmp_path):
    import shutil

    import torch

    bad = tmp_path / "bad_model"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "var.safetensors").unlink()
    torch.save({"w": torch.zeros(1), "x": _Evil()}, bad / "var.pth")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sasq",
            "generate",
            "--model",
            str(bad),
            "--out",
            str(tmp_path / "g.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "refused" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unwritable_output_folder(tiny_model_dir, tmp_path, capsys):
    # A regular file where the output folder should be: no user can create the folder.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--model", str(tiny_model_dir), "--out", str(blocker / "g.png")]) == 2
    assert "cannot create output folder" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_lint_command_passes_clean_and_fails_seeded_graph(tmp_path, capsys):
    import onnx
    from qdq_builders import attention

    clean = attention()
    onnx.save(clean, tmp_path / "clean.onnx")
    assert main(["lint", str(tmp_path / "clean.onnx")]) == 0
    assert "PASSED" in capsys.readouterr().out
    bad = attention()
    # Seed one violation: the softmax output's Q at 1/255 instead of 1/127.
    scale = next(i for i in bad.graph.initializer if i.name == "p_scale")
    scale.CopyFrom(onnx.numpy_helper.from_array(np.array(1 / 255, np.float32), "p_scale"))
    onnx.save(bad, tmp_path / "bad.onnx")
    assert main(["lint", str(tmp_path / "bad.onnx")]) == 1
    assert "softmax-scale" in capsys.readouterr().out
    assert main(["lint", str(tmp_path / "missing.onnx")]) == 2


def test_calibrate_quantize_lint_generate_chain(default_export, tmp_path, capsys):
    calib, q = tmp_path / "calib.json", tmp_path / "int8"
    assert main(["calibrate", "--onnx", str(default_export), "--n", "8", "--out", str(calib)]) == 0
    capsys.readouterr()
    args = ["quantize", "--onnx", str(default_export), "--calib", str(calib), "--out", str(q)]
    assert main([*args, "--shift-sum"]) == 0
    report = capsys.readouterr().out
    assert json.loads(report[report.index("{") :])["lint"] == "PASSED"
    assert main(["lint", str(q / "step.onnx")]) == 0  # the manifest's float GEMVs are exempt
    assert "PASSED" in capsys.readouterr().out
    out = tmp_path / "g.png"
    assert (
        main(["generate", "--backend", "ort", "--onnx", str(q), "--n", "4", "--out", str(out)]) == 0
    )
    assert out.is_file()
    # a cache of another model is refused in one line
    other = json.loads(calib.read_text()) | {"model_hash": "0" * 64}
    calib.write_text(json.dumps(other))
    assert main([*args[:-1], str(tmp_path / "int8b")]) == 2
    assert "another step graph" in capsys.readouterr().err
    assert not (tmp_path / "int8b").exists()


def test_export_of_a_corrupt_checkpoint_is_one_line(tiny_model_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "var.safetensors").write_bytes(b"not a safetensors file")
    assert main(["export", "--model", str(bad), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err
    assert "not a valid safetensors" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "onnx").exists()


def test_tampered_export_is_refused_in_one_line(default_export, tmp_path, capsys):
    import shutil

    copy = tmp_path / "onnx"
    shutil.copytree(default_export, copy)
    data = bytearray((copy / "decoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "decoder.onnx").write_bytes(bytes(data))
    rc = main(
        ["generate", "--backend", "ort", "--onnx", str(copy), "--out", str(tmp_path / "g.png")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "decoder.onnx" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("suffix", ["/", "/.", "//"])
def test_out_naming_a_folder_is_refused_in_one_line(tiny_model_dir, tmp_path, capsys, suffix):
    """``--out dir/`` once wrote a PNG named ``dir`` (Path drops the trailing separator)."""
    out = str(tmp_path / "grids") + suffix
    assert main(["generate", "--model", str(tiny_model_dir), "--n", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"{out}: names a folder; --out needs a file name here" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no file named grids, no folder either
