"""The calibration cache: exact round trip, diffable layout, refusals as one-line user
errors, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sasq.errors import UserError
from sasq.files import sha256_file
from sasq.quant.cache import FORMAT_VERSION, CalibCache, TensorRange, load_cache, save_cache
from sasq.quant.settings import CalibSettings, ObserverMethod, ResampleMode, SelectionMethod

HASH = "ab" * 32


def _cache(**kw) -> CalibCache:
    settings = CalibSettings(
        observer=ObserverMethod.ENTROPY,
        percentile=99.99,
        num_samples=64,
        resample=ResampleMode.OURS,
        selection=SelectionMethod.DGC,
        seed=7,
    )
    args = {
        "model_hash": HASH,
        "settings": settings,
        "ranges": {
            "blocks.0.attn.q": TensorRange(3.0517578125, (0.1, 1.0 / 3.0, 2.5)),
            "head.in": TensorRange(12.75, ()),
        },
        "attention": {"blocks.0.attn": ((1.0,), (0.75, 0.25), (0.5, 0.125, 0.375))},
        "weight_scales": {"blocks.0.attn.mat_qkv.weight": np.linspace(0.01, 0.02, 6)},
        "warnings": ("head.in: dropped 3 non-finite values (NaN/Inf) of 1000",),
    }
    args.update(kw)
    return CalibCache(**args)


def test_round_trip_is_exact(tmp_path):
    c = _cache()
    save_cache(c, tmp_path / "calib.json")
    back = load_cache(tmp_path / "calib.json", expect_model_hash=HASH)
    assert back == c
    assert back.ranges["blocks.0.attn.q"].steps[1] == 1.0 / 3.0  # repr floats: bit-exact
    assert back.settings.observer is ObserverMethod.ENTROPY
    assert back.format_version == FORMAT_VERSION
    assert back != _cache(ranges={"head.in": TensorRange(12.5)})


def test_without_arrays_no_npz_is_written(tmp_path):
    save_cache(_cache(weight_scales={}), tmp_path / "calib.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.json"]
    assert json.loads((tmp_path / "calib.json").read_text())["weight_scales"] is None


def test_layout_is_sorted_and_diffable(tmp_path):
    path = tmp_path / "calib.json"
    save_cache(_cache(), path)
    text = path.read_text()
    d = json.loads(text)
    assert d["format_version"] == 1 and d["model_hash"] == HASH
    assert d["ranges"]["blocks.0.attn.q"] == {"all": 3.0517578125, "steps": [0.1, 1 / 3, 2.5]}
    assert d["settings"] == {
        "num_samples": 64,
        "observer": "entropy",
        "percentile": 99.99,
        "resample": "ours",
        "seed": 7,
        "selection": "dgc",
    }
    assert list(d) == sorted(d)
    assert '"steps": [0.1, 0.3333333333333333, 2.5]' in text  # one line per list
    save_cache(_cache(), tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == text.replace('"calib.', '"again.')


def test_refuses_a_cache_for_another_model(tmp_path):
    save_cache(_cache(), tmp_path / "calib.json")
    with pytest.raises(UserError, match="for another model") as e:
        load_cache(tmp_path / "calib.json", expect_model_hash="cd" * 32)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"format_version": 1, "model_ha', "invalid JSON"),
        ("[1, 2]", "malformed"),
        ('{"format_version": 2, "model_hash": "x"}', "format_version 2 is not supported"),
        ('{"model_hash": "x"}', "format_version None"),
        ('{"format_version": 1, "model_hash": "x", "ranges": {}}', "malformed"),
        (
            '{"format_version": 1, "model_hash": "x", "settings": {"observer": "magic"},'
            ' "ranges": {}}',
            "malformed",
        ),
        (
            '{"format_version": 1, "model_hash": "x", "settings": {},'
            ' "ranges": {"t": {"all": "big"}}}',
            "malformed",
        ),
    ],
)
def test_refuses_corrupt_files_with_one_line(tmp_path, text, match):
    path = tmp_path / "calib.json"
    path.write_text(text)
    with pytest.raises(UserError, match=match) as e:
        load_cache(path)
    assert "\n" not in str(e.value)


def _npz(tmp_path) -> list:
    return sorted(tmp_path.glob("*.npz"))


def test_refuses_missing_or_tampered_arrays(tmp_path):
    path = tmp_path / "calib.json"
    save_cache(_cache(), path)
    (npz,) = _npz(tmp_path)
    assert npz.name.startswith("calib.") and len(npz.name) == len("calib.") + 16 + 4
    np.savez(npz, other=np.ones(2))
    with pytest.raises(UserError, match="does not match"):
        load_cache(path)
    npz.unlink()
    with pytest.raises(UserError, match="missing"):
        load_cache(path)
    with pytest.raises(UserError, match="no such calibration cache"):
        load_cache(tmp_path / "nope.json")


def _snapshot(tmp_path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())}


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "calib.json"
    save_cache(_cache(), path)
    before = _snapshot(tmp_path)
    assert len(before) == 2  # calib.json and its .npz, no temporary files

    # A value JSON cannot hold: refused before anything is written.
    with pytest.raises(ValueError, match="finite"):
        save_cache(_cache(ranges={"t": TensorRange(float("nan"))}), path)
    assert _snapshot(tmp_path) == before

    # The disk fails at either rename: temporary files go, the old pair stays valid.
    real_replace = os.replace
    for fail_at in (1, 2):
        calls = []

        def flaky(src, dst, fail_at=fail_at, calls=calls):
            calls.append(dst)
            if len(calls) == fail_at:
                raise OSError("disk full")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", flaky)
        new = _cache(weight_scales={"w": np.ones(3)}, ranges={})
        with pytest.raises(OSError, match="disk full"):
            save_cache(new, path)
        monkeypatch.undo()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert (tmp_path / "calib.json").read_bytes() == before["calib.json"]
        assert load_cache(path) == _cache()

    # A successful rewrite replaces the pair and removes the superseded .npz.
    save_cache(_cache(weight_scales={"w": np.ones(3)}), path)
    assert len(_npz(tmp_path)) == 1 and load_cache(path).weight_scales["w"].tolist() == [1.0] * 3
    save_cache(_cache(weight_scales={}), path)
    assert _npz(tmp_path) == []


def test_sha256_file(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_files_follow_the_umask_like_every_other_output(tmp_path, umask):
    """calib.json and its .npz get the mode a plain open() would give (0666 less the umask),
    not mkstemp's 0600: a cache written for a team stays readable by it."""
    old = os.umask(umask)
    try:
        path = tmp_path / "calib.json"
        save_cache(_cache(), path)
        (npz,) = _npz(tmp_path)
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert {p.stat().st_mode & 0o777 for p in (path, npz, plain)} == {want}
