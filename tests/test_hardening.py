"""Malformed inputs through the CLI, as a hostile or careless user gives them (issue 14).

Every case runs ``sasq`` in-process (``hostile_inputs.run_cli``) and asserts the exit
status, exactly one line on stderr naming the problem, no traceback, and that no file of
the case's world (its sandbox and every shared artifact it reads) changed, appeared or
vanished. Case names start with the issue's item: 1 names leaving the folder, 2-3 an
``--out`` that is not a pure export, 5 calibration caches, 6 weights, 7 sizes, 8 user
mistakes, 9 mixed models. ``test_manifest_fuzz`` and ``test_cache_fuzz`` break a valid
manifest and cache field by field; the swap of ``--out`` under kills is ``test_out_swap``.
"""

from __future__ import annotations

import hashlib
import json
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
    escaping_symlink,
    export_holding,
    external_step,
    first_attention,
    first_range,
    fp_with,
    manifest_with,
    model_with,
    nan_weight_step,
    other_source,
    pickled_model,
    png_header,
    poison,
    put,
    replace_file,
    run_cli,
    small_png,
    webapp,
)


@pytest.fixture(scope="module")
def shared(default_export, tiny_model_dir, tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """The FP export of the default model, a cache of it (2 samples) and its int8 export."""
    from sasq.calib.cache import load_cache, save_cache
    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.exporter.qdq_config import QuantConfig
    from sasq.exporter.quantize import quantize

    root = tmp_path_factory.mktemp("hardening")
    calib = root / "calib" / "calib.json"
    calib.parent.mkdir()
    cc = CalibConfig(num_samples=2, batch=2, threads=1, progress=False)
    with pytest.warns(UserWarning, match="cover only"):
        save_cache(calibrate(default_export, cc).cache, calib)
    int8 = quantize(default_export, load_cache(calib), QuantConfig(), root / "int8")
    return default_export, calib, int8, tiny_model_dir


@pytest.fixture
def world(shared, tmp_path) -> World:
    return World(tmp_path, *shared)


class Case(NamedTuple):
    argv: Callable[[World], list]  # builds its inputs in world.sandbox
    rc: int
    needle: str


Argv = Callable[[World], list]


def gen_ort(folder: Callable[[World], Path]) -> Argv:
    """``generate`` of one image on ONNX Runtime from the folder ``folder(world)``."""
    return lambda w: [
        "generate", "--backend", "ort", "--onnx", folder(w), "--n", "1", "--out", w.sandbox / "g"
    ]  # fmt: skip


def quant(onnx_dir=None, calib=None, *extra: str) -> Argv:
    """``quantize`` of ``onnx_dir(world)`` (the FP export) with ``calib(world)``."""
    return lambda w: [
        "quantize", "--onnx", (onnx_dir or (lambda w: w.fp))(w),
        "--calib", (calib or (lambda w: w.calib))(w), "--out", w.sandbox / "q", *extra,
    ]  # fmt: skip


def quant_out(out: Callable[[World], Path]) -> Argv:
    """``quantize`` of the FP export to the prepared ``--out`` ``out(world)``."""
    return lambda w: ["quantize", "--onnx", w.fp, "--calib", w.calib, "--out", out(w)]


def cmd(*args) -> Argv:
    """A command line; callables among ``args`` are built in the world."""
    return lambda w: [a(w) if callable(a) else a for a in args]


def sandbox(name: str) -> Callable[[World], Path]:
    return lambda w: w.sandbox / name


def model_cfg(fn: Callable[[dict], object]) -> Argv:
    """``generate`` with a model folder whose config.json ``fn`` edited."""
    return cmd("generate", "--model", lambda w: model_with(w, lambda c, t: fn(c)), "--out",
               sandbox("g.png"))  # fmt: skip


def set_(key: str, value) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


def nan_export_with_cache(w: World) -> list:
    """A hostile export with a NaN weight and a cache made for exactly its step graph."""
    fp = fp_with(nan_weight_step)(w)
    step_hash = hashlib.sha256((fp / "step.onnx").read_bytes()).hexdigest()
    calib = cache_with(set_("model_hash", step_hash))(w)
    return ["quantize", "--onnx", fp, "--calib", calib, "--out", w.sandbox / "q"]


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
    "7 config with patch size 300": Case(
        model_cfg(lambda c: [set_("patch_nums", [1, 2, 3, 300])(c[s]) for s in ("var", "vqvae")]),
        2, "building this model needs about"),
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


# ----- field-by-field fuzzing of a valid manifest and a valid cache -----


def _leaves(obj, path=()):
    """(path, value) of every container and scalar; of a list its first and last items."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i in sorted({0, len(obj) - 1}) if obj else ():
            yield from _leaves(obj[i], (*path, i))


def _wrong(value) -> list:
    """Values of the wrong type, sign or size for ``value``'s field."""
    if isinstance(value, bool):
        return ["true"]
    if isinstance(value, int):
        return ["7", -1, 10**18]
    if isinstance(value, float):
        return ["x", NAN, 1e18, -2.0]
    if isinstance(value, str):
        return [7]
    if value is None:
        return ["x"]
    return [{}] if isinstance(value, list) else [[]]


def _mutated(d: dict, path: tuple, value):
    """A deep copy of ``d`` with the field at ``path`` set to ``value``."""
    d = json.loads(json.dumps(d))
    if not path:
        return value
    target = d
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return d


def _fuzz(d: dict, skip: Callable[[tuple, object], bool], run: Callable[[object, Path], None]):
    """Run every mutation of every field of ``d``; fail once, listing every miss."""
    misses, n = [], 0
    for path, value in _leaves(d):
        for bad in _wrong(value):
            if skip(path, bad):
                continue
            n += 1
            try:
                run(_mutated(d, path, bad), Path(f"case{n}"))
            except AssertionError as e:
                misses.append(f"{'.'.join(map(str, path))}={bad!r}: {str(e).splitlines()[0]}")
    assert not misses, f"{len(misses)} of {n} mutations not refused cleanly:\n" + "\n".join(misses)
    return n


def test_manifest_fuzz(world, capfd):
    """Every field of a valid manifest given the wrong type, sign or size: refused, one line."""
    d = json.loads((world.fp / "manifest.json").read_text())

    def skip(path: tuple, bad) -> bool:
        if len(path) > 1 and path[0] == "extra":  # free-form notes
            return True
        in_shape = len(path) > 1 and path[-2] == "shape"  # a dim is a number or a symbol
        return in_shape and bad not in (-1, 10**18)

    def run(manifest, sub: Path) -> None:
        folder = clone(world.fp, world.sandbox / sub)
        replace_file(folder, "manifest.json", json.dumps(manifest).encode())
        argv = ["generate", "--backend", "ort", "--onnx", folder, "--out", world.sandbox / "g"]
        run_cli(argv, world, capfd, 2, "invalid manifest")

    assert _fuzz(d, skip, run) > 300


def test_cache_fuzz(world, capfd):
    """Every field of a valid calibration cache broken: refused, one line, 'recalibrate'."""
    d = json.loads(world.calib.read_text())
    names = sorted(d["ranges"])[:2]
    d["ranges"] = {k: d["ranges"][k] for k in names}  # two tensors stand for all
    d["attention"] = {k: v for k, v in list(d["attention"].items())[:1]}

    def skip(path: tuple, bad) -> bool:
        harmless = path[:1] == ("warnings",) or path in (("settings", "num_samples"),
                                                          ("settings", "seed"))  # fmt: skip
        return (harmless and bad == 10**18) or path[:1] == ("warnings",)

    def run(cache, sub: Path) -> None:
        p = world.sandbox / f"{sub}.json"
        p.write_text(json.dumps(cache))
        argv = ["quantize", "--onnx", world.fp, "--calib", p, "--out", world.sandbox / "q"]
        run_cli(argv, world, capfd, 2, "recalibrate")

    assert _fuzz(d, skip, run) > 40


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


def test_an_export_holding_only_its_own_files_is_replaced(world, capfd):
    from sasq.exporter.manifest import verify

    out = clone(world.int8, world.sandbox / "out")
    argv = ["quantize", "--onnx", world.fp, "--calib", world.calib, "--out", out, "--shift-sum"]
    run_cli(argv, world, capfd, 0, "", out=out)
    assert verify(out).extra["quant"]["shift_sum"]["enabled"] is True
    assert sorted(p.name for p in world.sandbox.iterdir()) == ["out"]  # no leftovers
