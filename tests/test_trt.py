"""TensorRT path: honest failure without TensorRT/GPU, the engine cache key, profiles;
the GPU build itself is marked and skipped with the reason where TensorRT is missing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from sasq.engines.trt_engine import (
    TRT_MISSING,
    EngineConfig,
    check_cached,
    engine_key,
    scale_shapes,
)
from sasq.exporter import verify
from sasq.tools.cli import main
from sasq.tools.errors import UserError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks its absence")
def test_build_without_tensorrt_is_one_line_exit_2(default_export, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sasq",
            "build",
            "--onnx",
            str(default_export),
            "--out",
            str(tmp_path / "e.plan"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == f"sasq build: error: {TRT_MISSING}"
    assert not (tmp_path / "e.plan").exists()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks its absence")
def test_selftest_and_trt_backend_say_what_is_missing(default_export, tmp_path, capsys):
    assert main(["selftest", "--gpu", "--out", str(tmp_path)]) == 2
    assert TRT_MISSING in capsys.readouterr().err
    rc = main(
        [
            "generate",
            "--backend",
            "trt",
            "--onnx",
            str(default_export),
            "--engine",
            str(tmp_path / "x.plan"),
            "--out",
            str(tmp_path / "g.png"),
        ]
    )
    assert rc == 2 and TRT_MISSING in capsys.readouterr().err


def test_one_static_profile_per_scale(default_export):
    shapes = scale_shapes(verify(default_export), batch=4)
    assert len(shapes) == 4
    assert [s["x_BlC"] for s in shapes] == [(8, l, 128) for l in (1, 4, 9, 16)]
    assert [s["past_key_0"][2] for s in shapes] == [0, 1, 5, 14]
    assert all(s["mod_BMC"] == (8, 6 * 4 + 2, 128) for s in shapes)


def test_engine_cache_reuses_only_a_matching_plan(default_export, tmp_path):
    onnx_path = default_export / "step.onnx"
    key = engine_key(onnx_path, "10.9.0", "NVIDIA H100", EngineConfig())
    plan = tmp_path / "e.plan"
    assert check_cached(plan, key, rebuild=False) is False  # nothing yet: build
    plan.write_bytes(b"engine")
    (tmp_path / "e.plan.json").write_text(json.dumps(key))
    assert check_cached(plan, key, rebuild=False) is True
    for field, value in (("tensorrt", "10.8.0"), ("gpu", "NVIDIA A100")):
        other = key | {field: value}
        with pytest.raises(UserError, match=f"stale or foreign engine.*{field}.*--rebuild"):
            check_cached(plan, other, rebuild=False)
        assert check_cached(plan, other, rebuild=True) is False
    (tmp_path / "e.plan.json").unlink()
    with pytest.raises(UserError, match="without a valid"):
        check_cached(plan, key, rebuild=False)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason=TRT_MISSING)
def test_gpu_selftest_passes(tmp_path):
    assert main(["selftest", "--gpu", "--out", str(tmp_path)]) == 0
