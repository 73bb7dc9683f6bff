"""ONNX Runtime's GPU providers: the options each graph gets (explicit TensorRT profiles over
every scale and the run's batches, caches, int8 for Q/DQ graphs), the refusal of a session
that fell back to another provider, and packaging that installs one ONNX Runtime wheel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sasq.engines.ort_gpu import graph_profile, tensorrt_options
from sasq.engines.ort_session import check_providers
from sasq.engines.trt_plan import BatchRange
from sasq.errors import UserError
from sasq.exporter import verify

ROOT = Path(__file__).resolve().parents[1]


def test_every_dynamic_input_of_every_graph_gets_a_profile_covering_every_scale(default_export):
    m = verify(default_export)
    b = BatchRange(1, 4, 8)
    for key, spec in m.graphs.items():
        prof = graph_profile(m, key, b)
        assert set(prof) == {t.name for t in spec.inputs}, key
        for name, (lo, opt, hi) in prof.items():
            assert all(a <= o <= c for a, o, c in zip(lo, opt, hi, strict=True)), (key, name)
    step = graph_profile(m, "step", b)
    # rows 2..16 (CFG), new tokens 1..16 (scales 1..4), cached 0..14 (before scale 0 .. 3)
    assert step["x_BlC"] == ((2, 1, 128), (8, 16, 128), (16, 16, 128))
    assert step["past_key_0"] == ((2, 4, 0, 32), (8, 4, 14, 32), (16, 4, 14, 32))
    assert graph_profile(m, "next_2", b)["idx_Bl"] == ((1, 9), (4, 9), (8, 9))
    assert graph_profile(m, "start", b)["label_2B"] == ((2,), (8,), (16,))


def test_tensorrt_options_are_strings_in_ort_format(default_export, tmp_path):
    m = verify(default_export)
    opts = tensorrt_options(graph_profile(m, "next_0", BatchRange(2, 2, 4)), tmp_path / "c", True)
    assert all(isinstance(v, str) for v in opts.values())
    assert opts["trt_profile_min_shapes"] == "idx_Bl:2x1,f_hat:2x32x4x4"
    assert opts["trt_profile_max_shapes"] == "idx_Bl:4x1,f_hat:4x32x4x4"
    assert opts["trt_int8_enable"] == "True" and opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "c") and (tmp_path / "c").is_dir()
    assert "trt_fp16_enable" not in opts  # precision comes from the graph (TensorRT 11)


def test_a_session_that_fell_back_is_refused():
    chain = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    check_providers(chain, chain, "x.onnx")
    with pytest.raises(UserError, match="asked for .*Tensorrt.*got CPUExecutionProvider"):
        check_providers(["CPUExecutionProvider"], chain, "x.onnx")


def test_one_onnx_runtime_wheel_per_environment():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(meta["dependencies"])
    extras = {k: " ".join(v) for k, v in meta["optional-dependencies"].items()}
    assert "onnxruntime" not in core and "tensorrt" not in core
    assert "onnxruntime>=" in extras["cpu"] and "onnxruntime-gpu" not in extras["cpu"]
    assert "onnxruntime-gpu" in extras["gpu"] and "onnxruntime>=" not in extras["gpu"]
    assert "<" in extras["gpu"].partition("tensorrt")[2]  # pinned to the major it was written for
    assert all("onnxruntime" not in v for k, v in extras.items() if k not in ("cpu", "gpu"))
    assert "'.[dev,cpu]'" in (ROOT / "Makefile").read_text()


def test_the_gpu_gate_does_not_need_torch():
    code = ("import sys; from sasq.engines import trt_device as d; n = d.gpu_count(); "
            "print(n, 'torch' in sys.modules)")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split()[-1] == "False"
