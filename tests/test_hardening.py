"""Malformed inputs through the CLI, as a hostile or careless user gives them (issue 14).

Every case runs ``sasq`` in-process (``hostile_inputs.run_cli``) and asserts the exit
status, exactly one line on stderr naming the problem, no traceback, and that no file of
the case's world (its sandbox and every shared artifact it reads) changed, appeared or
vanished. Case names start with the issue's item: 1 names leaving the folder, 2-3 an
``--out`` that is not a pure export, 5 calibration caches, 6 weights, 7 sizes, 8 user
mistakes, 9 mixed models, 10 what a hostile-input probe still found (issue 27): folders
beside ``--out`` that sasq did not make, JSON nested 100,000 deep, fifos, ``true`` as a
number, a 2 GB sparse cache, an empty ONNX file, a full disk. ``test_hardening_fuzz``
breaks a valid manifest and cache field by field; the swap of ``--out`` under kills is
``test_out_swap``.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from hostile_inputs import (
    World,
    bashrc_export,
    cache_with,
    clone,
    cmd,
    deep_json,
    escaping_symlink,
    export_holding,
    external_step,
    fifo,
    first_attention,
    first_range,
    fp_with,
    gen_ort,
    manifest_with,
    model_cfg,
    model_with,
    nan_export_with_cache,
    nan_weight_step,
    other_source,
    pickled_model,
    png_header,
    poison,
    put,
    quant,
    quant_out,
    replace_file,
    run_cli,
    sandbox,
    set_,
    small_png,
    sparse,
    webapp,
)


class Case(NamedTuple):
    argv: Callable[[World], list]  # builds its inputs in world.sandbox
    rc: int
    needle: str


NAN, INF = float("nan"), float("inf")
PNG = lambda name, data: lambda w: put(w, name, data)  # noqa: E731

# fmt: off
CASES: dict[str, Case] = {
    # 1. names in a manifest / ONNX file that leave the folder
    "1 manifest lists ../.bashrc (quantize)": Case(
        quant(bashrc_export), 2, "'../.bashrc' is not a plain file name"),
    "1 manifest lists ../.bashrc (generate verifies)": Case(
        gen_ort(bashrc_export), 2, "'../.bashrc' is not a plain file name"),
    "1 graph file absolute": Case(
        gen_ort(manifest_with(lambda d: set_("file", "/etc/passwd")(d["graphs"]["step"]))),
        2, "graphs.step.file: '/etc/passwd' is not a plain file name"),
    "1 files lists /dev/zero": Case(
        gen_ort(manifest_with(lambda d: set_("/dev/zero", {})(d["files"]))),
        2, "files: '/dev/zero' is not a plain file name"),
    "1 next graph in a subfolder": Case(
        gen_ort(manifest_with(lambda d: set_("next_graph", "a/next_1.onnx")(d["scales"][1]))),
        2, "scales[1].next_graph: 'a/next_1.onnx' is not a plain file name"),
    "1 external_data ../": Case(
        gen_ort(manifest_with(lambda d: set_("external_data", "../w")(d["graphs"]["step"]))),
        2, "graphs.step.external_data: '../w' is not a plain file name"),
    "1 listed file is a symlink out of the folder": Case(
        gen_ort(escaping_symlink), 2, "decoder.onnx: symlink leads outside"),
    "1 ONNX external data at ../ (generate)": Case(
        gen_ort(fp_with(lambda d: external_step(d, "../secret.bin"))),
        2, "external data location '../secret.bin' is not a plain file name"),
    "1 ONNX external data in an unlisted file (quantize)": Case(
        quant(fp_with(lambda d: external_step(d, "weights.bin"))),
        2, "external data 'weights.bin' is not a file its manifest lists"),
    "1 ONNX external data absolute (lint)": Case(
        cmd("lint", lambda w: fp_with(lambda d: external_step(d, "/etc/passwd"))(w) / "step.onnx"),
        2, "external data location '/etc/passwd' is not a plain file name"),
    "1 cache names its .npz ../": Case(
        quant(None, cache_with(set_("weight_scales", {"file": "../x.npz", "sha256": "0" * 64}))),
        2, "weight scales file '../x.npz' is not a plain file name"),
    # 2-3. an --out that is not a pure sasq export
    "2 --out is a web app with its own manifest.json": Case(
        quant_out(lambda w: webapp(w.sandbox / "out")),
        2, "not a sasq export (holds manifest.json, src); refusing to replace it"),
    "2 --out is a file": Case(
        quant_out(lambda w: put(w, "out", b"notes")), 2, "exists and is not a folder"),
    "2 serve --write-repo is a user's folder": Case(
        cmd("serve", "--onnx", lambda w: w.fp, "--write-repo", lambda w: put(w, "repo")), 2,
        "exists; --write-repo needs a new folder"),
    "2 --out is a symlink to an export": Case(
        quant_out(lambda w: _link(w.sandbox / "out", w.int8)), 2, "is a symlink"),
    "3 --out export holds the user's calib.json and RESULTS.md": Case(
        quant_out(lambda w: export_holding(w, {"calib.json": "{}", "RESULTS.md": "# mine"})),
        2, "holds RESULTS.md, calib.json, which its manifest does not list"),
    "3 --out export holds a subfolder": Case(
        quant_out(lambda w: export_holding(w, {"runs/a.txt": "1"})),
        2, "holds runs, which its manifest does not list"),
    "3 --out inside the source export": Case(
        lambda w: ["quantize", "--onnx", clone(w.fp, w.sandbox / "fp"), "--calib", w.calib,
                   "--out", w.sandbox / "fp" / "int8"], 2, "must not be written inside its source"),
    # 5. calibration caches that gave garbage silently
    **{f"5 range {label}": Case(
        quant(None, cache_with(lambda d, v=v: set_("all", v)(first_range(d)))),
        2, "outside the sane 1e-06..1e+06; recalibrate")
       for label, v in (("NaN", NAN), ("zero", 0.0), ("negative", -1.0), ("1e30", 1e30),
                        ("1e-30", 1e-30), ("Inf", INF))},
    "5 per-step range NaN": Case(
        quant(None, cache_with(lambda d: set_(1, NAN)(first_range(d)["steps"])), "--per-step"),
        2, "at step 1 is nan"),
    "5 attention NaN with --shift-sum": Case(
        quant(None, cache_with(lambda d: set_(0, NAN)(first_attention(d)[2])), "--shift-sum"),
        2, "at step 2 is not finite"),
    "5 attention above 1": Case(
        quant(None, cache_with(lambda d: set_(0, 7.0)(first_attention(d)[1]))),
        2, "at step 1 is outside [0, 1]"),
    "5 cache is a JSON list": Case(
        quant(None, cache_with(lambda d: [d])), 2, "top level is not an object"),
    # 6. non-finite weights
    "6 NaN in the VQVAE (generate)": Case(
        cmd("generate", "--model", lambda w: model_with(w, poison("vqvae", "decoder")),
            "--out", sandbox("g.png")), 2, "non-finite value(s) (NaN/Inf)"),
    "6 NaN in the transformer (export)": Case(
        cmd("export", "--model", lambda w: model_with(w, poison("var", "blocks.0.attn")),
            "--out", sandbox("e")), 2, "tensor blocks.0.attn"),
    "6 NaN weight inside an export (generate)": Case(
        gen_ort(fp_with(nan_weight_step)), 2, "non-finite logits at scale 0"),
    "6 NaN weight inside an export (quantize)": Case(
        nan_export_with_cache, 2, "has 1 non-finite value(s)"),
    # 7. sizes: refused before allocating, with the estimate
    "7 bench --batch-sizes 100000000": Case(
        cmd("bench", "--backends", "torch", "--batch-sizes", "1,100000000", "--out",
            sandbox("b")), 2, "bench at batch 100000000 needs about"),
    "7 generate --n 10000000": Case(
        cmd("generate", "--n", "10000000", "--out", sandbox("g.png")),
        2, "a grid of 10000000 images needs about"),
    "7 compare --n 2000000000": Case(
        cmd("compare", "torch", lambda w: f"ort={w.fp}", "--n", "2000000000", "--out",
            sandbox("c")), 2, "comparing 2000000000 samples needs about"),
    "7 calibrate --batch 1000000": Case(
        cmd("calibrate", "--onnx", lambda w: w.fp, "--n", "1000000", "--batch", "1000000",
            "--out", sandbox("c.json")), 2, "a rollout batch of 1000000 needs about"),
    "7 profile --batch 100000000": Case(
        cmd("profile", "--onnx", lambda w: w.fp, "--batch", "100000000", "--out", sandbox("p")),
        2, "a batch of 100000000 needs about"),
    "7 edit --n 100000000": Case(
        cmd("edit", "--task", "outpaint", "--image", PNG("s.png", small_png()), "--n",
            "100000000", "--out", sandbox("e.png")), 2, "editing 100000000 samples needs about"),
    # Loading builds on the meta device (nothing allocated: issue 27), so the weights' shapes
    # refuse this config; building it for real is refused by its estimate (test_memory).
    "7 config with patch size 300": Case(
        model_cfg(lambda c: [set_("patch_nums", [1, 2, 3, 300])(c[s]) for s in ("var", "vqvae")]),
        2, "does not fit VAR: 3 shape mismatches (e.g. attn_bias_for_masking"),
    "7 100-megapixel PNG": Case(
        cmd("edit", "--task", "inpaint", "--image", PNG("b.png", png_header(10000, 10000)),
            "--mask", PNG("m.png", small_png(16)), "--out", sandbox("e.png")),
        2, "too large to decode safely"),
    "7 400-megapixel PNG": Case(
        cmd("edit", "--task", "outpaint", "--image", PNG("b.png", png_header(20000, 20000)),
            "--out", sandbox("e.png")), 2, "too large to decode safely"),
    "7 PNG with an absurd side (header only, under PIL's pixel limit)": Case(
        cmd("edit", "--task", "outpaint", "--image", PNG("b.png", png_header(20000, 20)),
            "--out", sandbox("e.png")), 2, "image is 20000x20, sides above 16384 px are refused"),
    # 8. user mistakes that gave tracebacks or misleading messages
    "8 generate --batch 0": Case(
        cmd("generate", "--batch", "0", "--out", sandbox("g.png")),
        2, "argument --batch: must be at least 1, got 0"),
    "8 calibrate --percentile 150": Case(
        cmd("calibrate", "--onnx", lambda w: w.fp, "--percentile", "150", "--out",
            sandbox("c.json")), 2, "argument --percentile: must be in (0, 100]"),
    "8 compare --n 0": Case(
        cmd("compare", "torch", lambda w: f"ort={w.fp}", "--n", "0"),
        2, "argument --n: must be at least 1, got 0"),
    "8 bench --batch-sizes a": Case(
        cmd("bench", "--batch-sizes", "a"), 2, "argument --batch-sizes: invalid integer 'a'"),
    "8 bench --batch-sizes 1,,2": Case(
        cmd("bench", "--batch-sizes", "1,,2"), 2, "expected a comma list of integers"),
    "8 bench --repeats 0": Case(
        cmd("bench", "--repeats", "0"), 2, "argument --repeats: must be at least 1"),
    "8 generate --cfg nan": Case(
        cmd("generate", "--cfg", "nan", "--out", sandbox("g.png")),
        2, "argument --cfg: must be finite, got nan"),
    "8 generate --top-p 1.5": Case(
        cmd("generate", "--top-p", "1.5", "--out", sandbox("g.png")),
        2, "argument --top-p: must be in [0, 1]"),
    "8 generate --top-k above the vocabulary": Case(
        cmd("generate", "--top-k", "100000", "--out", sandbox("g.png")),
        2, "--top-k 100000 exceeds the vocabulary (512)"),
    "8 generate --seed -1": Case(
        cmd("generate", "--seed", "-1", "--out", sandbox("g.png")),
        2, "argument --seed: must be in 0..9223372036854775807"),
    "8 quantize --budget 2": Case(quant(None, None, "--budget", "2"), 2, "argument --budget"),
    "8 export --opset 1": Case(
        cmd("export", "--opset", "1", "--out", sandbox("e")), 2, "argument --opset: must be in"),
    "8 --out /proc/x": Case(
        cmd("generate", "--out", "/proc/x"), 2, "cannot write files in /proc"),
    "8 generate --out an existing folder": Case(
        cmd("generate", "--out", lambda w: put(w, "grid")), 2, "is a folder; --out needs a file"),
    "8 export --out the root folder": Case(
        cmd("export", "--out", "/"), 2, "cannot replace the root folder"),
    "8 manifest is a JSON list": Case(
        gen_ort(manifest_with(lambda d: [d])),
        2, "invalid manifest (top level: expected dict, got list"),
    "8 manifest format_version the string '2'": Case(
        gen_ort(manifest_with(set_("format_version", "2"))),
        2, "format_version is str '2', expected the integer 2"),
    "8 manifest is not JSON": Case(
        gen_ort(fp_with(lambda d: replace_file(d, "manifest.json", b"{oops"))),
        2, "invalid manifest (not JSON"),
    "8 config value of the wrong type": Case(
        model_cfg(lambda c: set_("depth", "4")(c["var"])),
        2, "VARConfig.depth must be an integer, got '4'"),
    "8 config value of the wrong sign": Case(
        model_cfg(lambda c: set_("num_heads", -4)(c["var"])),
        2, "VARConfig.num_heads is -4, outside 1..4096"),
    "8 config is a JSON list": Case(
        cmd("generate", "--model", lambda w: _list_config(w), "--out", sandbox("g.png")),
        2, "a model config must be a JSON object, got list"),
    "8 eval --rows foo (ran as 'plain')": Case(
        cmd("eval", "--rows", "plain,foo", "--out", sandbox("ev")), 2, "unknown rows ['foo']"),
    "8 lint beside a broken sasq manifest": Case(
        cmd("lint", lambda w: manifest_with(set_("format_version", "2"))(w) / "step.onnx"),
        2, "format_version is str '2'"),
    "8 lint a PNG": Case(
        cmd("lint", PNG("x.png", png_header(4, 4))), 2, "is not a readable ONNX model"),
    "8 .pth that would unpickle code": Case(
        cmd("generate", "--model", pickled_model, "--out", sandbox("g.png")),
        2, "not a plain weights file (loading it would run code: it needs"),
    # 9. models mixed up
    "9 generate --model X --onnx export of Y": Case(
        cmd("generate", "--model", lambda w: w.model, "--backend", "ort", "--onnx",
            lambda w: w.fp, "--out", sandbox("g.png")), 2, "exported from different weights"),
    "9 compare FP export of A with int8 export of B": Case(
        cmd("compare", lambda w: f"ort={w.fp}",
            lambda w: f"ort={other_source(clone(w.int8, w.sandbox / 'b'))}", "--out",
            sandbox("c")), 2, "were exported from different models"),
    "9 compare torch --model X with an export of Y": Case(
        cmd("compare", "torch", lambda w: f"ort={w.fp}", "--model", lambda w: w.model,
            "--out", sandbox("c")), 2, "exported from different weights"),
    "9 bench --model X with an export of Y": Case(
        cmd("bench", "--model", lambda w: w.model, "--onnx", lambda w: w.fp, "--out",
            sandbox("b")), 2, "exported from different weights"),
    "9 edit --model X with an export of Y": Case(
        cmd("edit", "--task", "outpaint", "--model", lambda w: w.model, "--backend", "ort",
            "--onnx", lambda w: w.fp, "--image", PNG("s.png", small_png()), "--out",
            sandbox("e.png")), 2, "exported from different weights"),
    # 10. what a hostile-input probe still found (issue 27)
    "10 calibration cache nested 100,000 levels deep": Case(
        quant(None, lambda w: put(w, "deep.json", deep_json())),
        2, "not a calibration cache (invalid JSON: nested too deeply"),
    "10 manifest nested 100,000 levels deep": Case(
        gen_ort(fp_with(lambda d: replace_file(d, "manifest.json", deep_json()))),
        2, "invalid manifest (not JSON: nested too deeply"),
    "10 range true (a bool is an int in Python)": Case(
        quant(None, cache_with(lambda d: set_("all", True)(first_range(d)))),
        2, "has no number 'all'); recalibrate"),
    "10 format_version true (== 1 in Python)": Case(
        quant(None, cache_with(set_("format_version", True))),
        2, "format_version True is not supported"),
    "10 fifo as --image": Case(
        cmd("edit", "--task", "outpaint", "--image", fifo("in.png"), "--out", sandbox("e.png")),
        2, "in.png: is a fifo, not a regular image file"),
    "10 fifo as --mask": Case(
        cmd("edit", "--task", "inpaint", "--image", PNG("s.png", small_png(16)), "--mask",
            fifo("m.png"), "--out", sandbox("e.png")), 2, "m.png: is a fifo, not a regular"),
    "10 fifo as --calib": Case(
        quant(None, fifo("calib.json")), 2, "calib.json: is a fifo, not a regular calibration"),
    "10 lint a 0-byte file": Case(
        cmd("lint", PNG("empty.onnx", b"")), 2, "empty.onnx: cannot be read as ONNX (an empty"),
}
# fmt: on


def _link(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


def _list_config(w: World) -> Path:
    d = model_with(w, lambda c, t: None)
    (d / "config.json").write_text("[]")
    return d


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_one_line_and_touches_nothing(name, world, capfd):
    case = CASES[name]
    run_cli(case.argv(world), world, capfd, case.rc, case.needle)


# ----- the same through a real process, and what must still work -----

IN_A_PROCESS = (
    "8 generate --batch 0",
    "8 manifest is a JSON list",
    "2 --out is a web app with its own manifest.json",
    "9 generate --model X --onnx export of Y",
)


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_a_real_process_prints_one_line(name, world):
    """stderr as a user sees it: warnings and ONNX Runtime's own logging included."""
    case = CASES[name]
    argv = [str(a) for a in case.argv(world)]
    r = subprocess.run([sys.executable, "-m", "sasq", *argv], capture_output=True, text=True)
    assert r.returncode == case.rc and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and case.needle in r.stderr, r.stderr


def _hwm_reset() -> int:
    """Reset the kernel's peak-RSS mark of this process to now; the current RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) << 10


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_10_a_2gb_sparse_cache_is_refused_unread(world, capfd):
    """A 2 GB file (a hole: no disk used) given as --calib was read whole, 4.5 GB of
    memory, before being refused. It is refused from its size: the peak RSS during the
    command grows by far less than the file (200 MB: the command's own work is ~10 MB)."""
    big = sparse(world, "calib.json", 2_000_000_000)
    base = _hwm_reset()
    argv = quant(None, lambda w: big)(world)
    run_cli(argv, world, capfd, 2, "calib.json: 2,000,000,000 bytes, more than a calibration")
    assert _status("VmHWM") - base < 200 << 20


def test_10_a_full_disk_names_out_not_the_input(world, capfd, monkeypatch):
    """quantize copies the FP export's other graphs into --out; when the disk fills, the
    copy's error names the file it read (shutil sets filename to the source, filename2 to
    the destination). The line names --out, never the read-only input."""

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for name in ("sendfile", "copy_file_range"):  # whichever shutil's fast copy uses
        if hasattr(os, name):
            monkeypatch.setattr(os, name, full)
    out = world.sandbox / "q"
    argv = ["quantize", "--onnx", world.fp, "--calib", world.calib, "--out", out]
    err = run_cli(argv, world, capfd, 2, f"{out}: No space left on device while writing --out")
    assert str(world.fp) not in err


def test_10_folders_beside_out_that_sasq_did_not_make_are_kept(world, capfd):
    """The start-up recovery of --out removed the user's ``.qq.tmp-notes`` and
    ``.qq.old-backup`` and renamed ``.qq2.old-mine`` into a missing ``qq2``: folders named
    like its leftovers, without its marker. Both runs succeed and leave them as they were."""
    user = [world.sandbox / n for n in (".qq.tmp-notes", ".qq.old-backup", ".qq2.old-mine")]
    for folder in user:
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
    for out in (world.sandbox / "qq", world.sandbox / "qq2"):
        argv = ["quantize", "--onnx", world.fp, "--calib", world.calib, "--out", out]
        run_cli(argv, world, capfd, 0, "", out=out)  # nothing outside --out changes
        assert (out / "manifest.json").is_file() and not (out / "keep.txt").exists()
    assert all((f / "keep.txt").read_text() == "mine" for f in user)
    assert sorted(p.name for p in world.sandbox.iterdir()) == sorted(
        [".qq.tmp-notes", ".qq.old-backup", ".qq2.old-mine", "qq", "qq2"]
    )


def test_an_export_holding_only_its_own_files_is_replaced(world, capfd):
    from sasq.exporter.manifest import verify

    out = clone(world.int8, world.sandbox / "out")
    argv = ["quantize", "--onnx", world.fp, "--calib", world.calib, "--out", out, "--shift-sum"]
    run_cli(argv, world, capfd, 0, "", out=out)
    assert verify(out).extra["quant"]["shift_sum"]["enabled"] is True
    assert sorted(p.name for p in world.sandbox.iterdir()) == ["out"]  # no leftovers
