"""Builders of malformed and hostile inputs, and the harness that runs ``sasq`` on them.

Each builder makes its bad input inside a case's sandbox from the shared, valid artifacts
(hard-linked copies, so building is cheap and the snapshot proves the originals intact).
``run_cli`` runs the CLI in-process and checks exit status, a single stderr line without a
traceback, and that nothing outside ``--out`` (for a refusal: nothing at all) changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from sasq.tools.cli import main


@dataclass(frozen=True)
class World:
    sandbox: Path  # the case's own folder
    fp: Path  # the embedded default model's FP export (shared: must never change)
    calib: Path  # its calibration cache (shared)
    int8: Path  # its int8 export (shared)
    model: Path  # a random tiny model folder: the default's config, other weights

    def roots(self) -> list[Path]:
        return [self.sandbox, self.fp, self.calib.parent, self.int8, self.model]


# ----- the harness -----


def snapshot(roots: list[Path]) -> dict[str, tuple]:
    """Every file, link and folder under the roots with its inode, size and mtime: a write
    in place changes the mtime, a replacement the inode (no hashing: the fuzz runs many)."""
    out: dict[str, tuple] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if stat.S_ISDIR(st.st_mode):  # a folder's mtime moves with transient files
                    out[p] = (st.st_mode, st.st_ino)
                    continue
                link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
                out[p] = (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, link)
    return out


def _changes(before: dict, after: dict) -> str:
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"removed {gone[:3]}, added {new[:3]}, changed {changed[:3]}"


def run_cli(argv: list, world: World, capfd, rc: int, needle: str, out: Path | None = None):
    """Run ``sasq argv``: exit status ``rc``; a refusal prints one stderr line holding
    ``needle`` and changes nothing at all; a success changes nothing outside ``out``."""
    before = snapshot(world.roots())
    got = main([str(a) for a in argv])
    captured = capfd.readouterr()
    err = captured.err.strip()
    after = snapshot(world.roots())
    assert got == rc, f"exit {got}, expected {rc}; stderr: {err}"
    assert "Traceback" not in captured.err + captured.out
    if rc != 0:
        assert len(err.splitlines()) == 1 and needle in err, err
        assert after == before, _changes(before, after)
    else:
        inside = str(out) if out is not None else "\0"
        b = {k: v for k, v in before.items() if not k.startswith(inside)}
        a = {k: v for k, v in after.items() if not k.startswith(inside)}
        assert a == b, _changes(b, a)
    return err


# ----- export folders -----


def clone(src: Path, dst: Path) -> Path:
    """A copy of an export folder by hard links."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        os.link(p, dst / p.name)
    return dst


def replace_file(folder: Path, name: str, data: bytes) -> None:
    """New content for a cloned file (unlinked first: it is a hard link to a shared one)."""
    (folder / name).unlink(missing_ok=True)
    (folder / name).write_bytes(data)


def edit_manifest(folder: Path, fn: Callable[[dict], object]) -> Path:
    """Apply ``fn`` to the manifest dict; a value it returns replaces the whole manifest."""
    d = json.loads((folder / "manifest.json").read_text())
    new = fn(d)
    replace_file(folder, "manifest.json", json.dumps(d if new is None else new).encode())
    return folder


def relist(folder: Path, name: str) -> None:
    """Record a file's new hash in the manifest (the maker of a hostile export would)."""
    data = (folder / name).read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    edit_manifest(folder, lambda d: d["files"].__setitem__(name, entry))


def fp_with(fn: Callable[[Path], object]) -> Callable[[World], Path]:
    """A builder: a clone of the FP export, then ``fn(folder)``."""

    def build(w: World) -> Path:
        d = clone(w.fp, w.sandbox / "fp")
        fn(d)
        return d

    return build


def manifest_with(fn: Callable[[dict], object]) -> Callable[[World], Path]:
    return fp_with(lambda d: edit_manifest(d, fn))


def other_source(folder: Path) -> Path:
    """The same export as if made from other weights (its provenance record changed)."""
    return edit_manifest(
        folder, lambda d: d["extra"]["source_model"].__setitem__("weights_sha256", "0" * 64)
    )


def external_step(folder: Path, location: str) -> None:
    """step.onnx with its largest weight stored 'externally' at ``location``, relisted."""
    m = onnx.load(str(folder / "step.onnx"))
    t = max(m.graph.initializer, key=lambda t: len(t.raw_data))
    n = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(n))):
        t.external_data.add(key=k, value=v)
    replace_file(folder, "step.onnx", m.SerializeToString())
    relist(folder, "step.onnx")


def nan_weight_step(folder: Path) -> None:
    """step.onnx with one NaN in a linear weight, relisted (a consistent hostile export)."""
    m = onnx.load(str(folder / "step.onnx"))
    t = next(t for t in m.graph.initializer if t.name.endswith(".T") and t.data_type == 1)
    a = onnx.numpy_helper.to_array(t).copy()
    a.flat[0] = np.nan
    t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
    replace_file(folder, "step.onnx", m.SerializeToString())
    relist(folder, "step.onnx")


def bashrc_export(w: World) -> Path:
    """An export one level below a user's .bashrc, listing ../.bashrc with its true hash."""
    home = w.sandbox / "home"
    home.mkdir()
    (home / ".bashrc").write_text("alias ls='ls --color'\n")
    data = (home / ".bashrc").read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    d = clone(w.fp, home / "export")
    return edit_manifest(d, lambda m: m["files"].__setitem__("../.bashrc", entry))


def escaping_symlink(w: World) -> Path:
    """An export whose decoder.onnx is a symlink to an identical file outside it."""
    d = clone(w.fp, w.sandbox / "fp")
    secret = w.sandbox / "secret.onnx"
    secret.write_bytes((d / "decoder.onnx").read_bytes())
    (d / "decoder.onnx").unlink()
    (d / "decoder.onnx").symlink_to(secret)
    return d


def webapp(d: Path) -> Path:
    """A folder that is not ours but has a manifest.json (a web app)."""
    (d / "src").mkdir(parents=True)
    (d / "src" / "app.js").write_text("console.log('hi')\n")
    (d / "manifest.json").write_text(json.dumps({"name": "my app", "start_url": "/"}))
    return d


def export_holding(w: World, files: dict[str, str]) -> Path:
    """A copy of the int8 export at sandbox/out with the user's files (``a/b`` names too)."""
    out = clone(w.int8, w.sandbox / "out")
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return out


# ----- calibration caches -----


def cache_with(fn: Callable[[dict], object]) -> Callable[[World], Path]:
    """A builder: the shared cache edited by ``fn`` (NaN / Infinity survive as JSON tokens)."""

    def build(w: World) -> Path:
        d = json.loads(w.calib.read_text())
        new = fn(d)
        p = w.sandbox / "bad_calib.json"
        p.write_text(json.dumps(d if new is None else new))
        return p

    return build


def first_range(d: dict) -> dict:
    return d["ranges"][sorted(d["ranges"])[0]]


def first_attention(d: dict) -> list:
    return d["attention"][sorted(d["attention"])[0]]


# ----- model folders and images -----


def model_with(w: World, fn: Callable[[dict, dict], None], name: str = "m") -> Path:
    """A copy of the tiny model folder; ``fn(config, {"vqvae": sd, "var": sd})`` edits it."""
    from safetensors.torch import load_file, save_file

    d = w.sandbox / name
    d.mkdir()
    cfg = json.loads((w.model / "config.json").read_text())
    tensors = {k: load_file(str(w.model / f"{k}.safetensors")) for k in ("vqvae", "var")}
    fn(cfg, tensors)
    (d / "config.json").write_text(json.dumps(cfg))
    for k, sd in tensors.items():
        save_file(sd, str(d / f"{k}.safetensors"))
    return d


def poison(part: str, key_hint: str) -> Callable[[dict, dict], None]:
    """Put a NaN into the first float tensor of ``part`` whose name holds ``key_hint``."""

    def fn(cfg: dict, tensors: dict) -> None:
        sd = tensors[part]
        key = next(k for k in sd if key_hint in k and sd[k].is_floating_point())
        sd[key] = sd[key].clone()
        sd[key].view(-1)[0] = float("nan")

    return fn


class Evil:
    """Unpickling this runs code: what weights_only=True must refuse."""

    def __reduce__(self):
        return (print, ("pwned",))


def pickled_model(w: World) -> Path:
    d = model_with(w, lambda cfg, t: None)
    (d / "var.safetensors").unlink()
    torch.save({"w": torch.zeros(1), "x": Evil()}, d / "var.pth")
    return d


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; it has no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def small_png(size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (size, size), 255).save(buf, format="PNG")
    return buf.getvalue()


def put(w: World, name: str, data: bytes | None = None) -> Path:
    """A file (or, without data, a folder holding a user's file) in the sandbox."""
    p = w.sandbox / name
    if data is None:
        p.mkdir()
        (p / "keep.txt").write_text("mine")
    else:
        p.write_bytes(data)
    return p


# ----- command lines of the cases, built in the case's world -----


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


# ----- files that are not what they claim: deep JSON, a fifo, a sparse giant -----


def deep_json(levels: int = 100_000) -> bytes:
    """``[[[...]]]``: valid JSON nested deeper than Python's parser can recurse."""
    return b"[" * levels + b"]" * levels


def fifo(name: str) -> Callable[[World], Path]:
    """A builder: a named pipe in the sandbox. Opening it for reading blocks until a writer
    comes; a watchdog opens it for writing after a minute, so code that wrongly reads it
    fails the case instead of hanging the test run."""

    def build(w: World) -> Path:
        p = w.sandbox / name
        os.mkfifo(p)

        def unblock() -> None:
            with contextlib.suppress(OSError):  # no reader: ENXIO, nothing to unblock
                os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))

        timer = threading.Timer(60.0, unblock)
        timer.daemon = True
        timer.start()
        return p

    return build


def sparse(w: World, name: str, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space (a hole): cheap to make, costly
    to read whole."""
    p = w.sandbox / name
    with open(p, "wb") as f:
        f.truncate(size)
    return p
