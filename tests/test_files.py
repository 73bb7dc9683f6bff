"""sasq.files: the one sha256 and the one atomic writer (fsync, rename, umask's mode)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sasq.files import atomic_path, sha256_file, write_bytes, write_json, write_text
from sasq.quant.cache import CalibCache, TensorRange, save_cache
from sasq.quant.settings import CalibSettings


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_sha256_file(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_writers_replace_whole_files_and_follow_the_umask(tmp_path, umask_027):
    write_text(tmp_path / "a.txt", "old")
    assert write_text(tmp_path / "a.txt", "new") == tmp_path / "a.txt"
    write_bytes(tmp_path / "b.bin", b"\0\1")
    write_json(tmp_path / "c.json", {"p": tmp_path})
    assert (tmp_path / "a.txt").read_text() == "new"
    assert (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert (tmp_path / "c.json").read_text() == f'{{\n  "p": "{tmp_path}"\n}}\n'
    for name in ("a.txt", "b.bin", "c.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == umask_027
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.json"]


def test_atomic_path_for_writers_that_take_a_path(tmp_path, umask_027):
    with atomic_path(tmp_path / "t.npz", suffix=".npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".t.npz.")
        np.savez(tmp, x=np.arange(3))  # would append .npz to a name without it
    assert np.load(tmp_path / "t.npz")["x"].tolist() == [0, 1, 2]
    assert (tmp_path / "t.npz").stat().st_mode & 0o777 == umask_027
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old"


def test_calibration_cache_follows_the_umask(tmp_path, umask_027):
    """calib.json and its .npz were written 0600 while every other output followed the
    umask; through sasq.files they are ordinary files."""
    cache = CalibCache(
        model_hash="0" * 64,
        settings=CalibSettings(),
        ranges={"t": TensorRange(1.0)},
        weight_scales={"w": np.ones(2)},
    )
    save_cache(cache, tmp_path / "calib.json")
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    assert all(p.stat().st_mode & 0o777 == umask_027 for p in files)
