"""TensorRT path: honest failure without TensorRT/GPU, profiles over a batch range, the plan's
sidecar checked at build and load, and the backend run end to end on the contract
simulator (same tokens as ONNX Runtime, two generations in a row, every batch of the
range, refusals in one line). The real GPU build is marked and skipped with the reason."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from sasq.engines.backends import make_backend
from sasq.engines.config import GenerateConfig
from sasq.engines.generate import generate_many
from sasq.engines.trt_engine import TRT_MISSING, EngineConfig, build_engine
from sasq.engines.trt_plan import BatchRange, load_plan_info, profile_shapes
from sasq.errors import UserError
from sasq.exporter import verify
from sasq.models import load_model
from sasq.tools.cli import main

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
SIM = EngineConfig(batch=BatchRange(1, 2, 4), simulate=True)


@pytest.fixture(scope="module")
def sim_plan(default_export, tmp_path_factory):
    return build_engine(default_export, tmp_path_factory.mktemp("plan") / "e.plan", SIM)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks its absence")
def test_build_without_tensorrt_is_one_line_exit_2(default_export, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "sasq", "build", "--onnx", str(default_export),
         "--out", str(tmp_path / "e.plan")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == f"sasq build: error: {TRT_MISSING}"
    assert not (tmp_path / "e.plan").exists()


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks its absence")
def test_selftest_and_a_real_plan_say_what_is_missing(default_export, sim_plan, tmp_path, capsys):
    assert main(["selftest", "--gpu", "--out", str(tmp_path)]) == 2
    assert TRT_MISSING in capsys.readouterr().err
    plan = tmp_path / "real.plan"
    plan.write_bytes(b"engine")
    side = json.loads(sim_plan.with_name("e.plan.json").read_text()) | {"simulated": False}
    side["engines"]["step"]["file"] = "real.plan"
    (tmp_path / "real.plan.json").write_text(json.dumps(side))
    argv = ["generate", "--backend", "trt", "--onnx", str(default_export),
            "--engine", str(plan), "--out", str(tmp_path / "g.png")]  # fmt: skip
    assert main(argv) == 2 and TRT_MISSING in capsys.readouterr().err


def test_one_profile_per_scale_over_the_batch_range(default_export):
    m = verify(default_export)
    shapes = [profile_shapes(m, BatchRange(1, 2, 4), si) for si in range(4)]
    assert [s["x_BlC"] for s in shapes] == [((2, l, 128), (4, l, 128), (8, l, 128))
                                           for l in (1, 4, 9, 16)]  # fmt: skip
    assert [s["past_key_0"][2][2] for s in shapes] == [0, 1, 5, 14]
    assert all(s["mod_BMC"][0] == (2, 6 * 4 + 2, 128) for s in shapes)


@pytest.mark.parametrize(
    "text, want",
    [("1:16", (1, 8, 16)), ("2:4", (2, 4, 4)), ("1:3:9", (1, 3, 9)), ("9:20", (9, 9, 20))],
)
def test_batch_range_parses(text, want):
    b = BatchRange.parse(text)
    assert (b.min, b.opt, b.max) == want


@pytest.mark.parametrize("text", ["16", "0:4", "4:1", "1:9:4", "a:b", "1:2:3:4", "1:5000"])
def test_batch_range_refuses(text):
    with pytest.raises(UserError, match="batch"):
        BatchRange.parse(text)


def test_simulated_plan_gives_ort_tokens_twice_at_every_batch_of_its_range(
    default_export, sim_plan
):
    """Rows A, B and C end to end: scale 0's empty past, the cache carried from step to step
    and from one generation to the next, and batches 1 (min), 2 (opt) and 4 (max)."""
    model = load_model()
    ort = make_backend("ort", None, default_export)
    trt = make_backend("trt", None, default_export, engine=sim_plan)
    assert trt.simulated and trt.batch_range == BatchRange(1, 2, 4)
    for seed in (0, 1):  # the same backend instance, generation after generation
        for b in (1, 2, 4, 3):
            gc = GenerateConfig(tuple(range(b)), seed=seed, batch=b)
            a, t = generate_many(model, ort, gc), generate_many(model, trt, gc)
            assert all(torch.equal(x, y) for x, y in zip(a.idx, t.idx, strict=True)), (seed, b)
            assert torch.equal(a.img, t.img)


def test_a_batch_outside_the_plan_is_one_line(default_export, sim_plan, tmp_path, capsys):
    argv = ["generate", "--backend", "trt", "--onnx", str(default_export), "--engine",
            str(sim_plan), "--n", "8", "--batch", "8",
            "--out", str(tmp_path / "g.png")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "batches of 1..4 images, got 8" in err
    assert "--batch-range" in err and not (tmp_path / "g.png").exists()


def test_build_reuses_a_matching_plan_and_refuses_a_stale_one(default_export, tmp_path):
    plan = build_engine(default_export, tmp_path / "e.plan", SIM)
    before = plan.stat().st_mtime_ns
    assert build_engine(default_export, plan, SIM) == plan and plan.stat().st_mtime_ns == before
    wider = EngineConfig(batch=BatchRange(1, 2, 8), simulate=True)
    with pytest.raises(UserError, match="stale or foreign engine \\(different batch\\).*--rebuild"):
        build_engine(default_export, plan, wider)
    build_engine(default_export, plan, wider, rebuild=True)
    assert load_plan_info(plan).batch == BatchRange(1, 2, 8)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("tensorrt", "10.9.0", "built by TensorRT 10.9.0"),
        ("gpu", "NVIDIA H100", "built for NVIDIA H100"),
        ("onnx_sha256", "0" * 64, "built from another step.onnx"),
    ],
)
def test_load_refuses_a_plan_from_elsewhere(
    default_export, sim_plan, tmp_path, field, value, match
):
    side = json.loads(sim_plan.with_name("e.plan.json").read_text())
    if field == "onnx_sha256":
        side["engines"]["step"][field] = value
    else:
        side[field] = value
    plan = tmp_path / "e.plan"
    plan.write_bytes(sim_plan.read_bytes())
    (tmp_path / "e.plan.json").write_text(json.dumps(side))
    with pytest.raises(UserError, match=match):
        make_backend("trt", None, default_export, engine=plan)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d | {"batch": {"min": True, "opt": 2, "max": 4}},  # a bool is not a number
        lambda d: d | {"batch": {"min": 4, "opt": 2, "max": 1}},
        lambda d: d | {"engines": {"step": d["engines"]["step"] | {"file": "../e.plan"}}},
        lambda d: d | {"format_version": 99},
        lambda d: [d],
    ],
)
def test_a_strangers_sidecar_is_refused_in_one_line(sim_plan, tmp_path, edit):
    side = json.loads(sim_plan.with_name("e.plan.json").read_text())
    (tmp_path / "e.plan.json").write_text(json.dumps(edit(side)))
    with pytest.raises(UserError, match="e.plan.json: not a sasq plan sidecar"):
        load_plan_info(tmp_path / "e.plan")


def test_deeply_nested_sidecar_is_one_line(tmp_path):
    (tmp_path / "e.plan.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="not a readable plan sidecar"):
        load_plan_info(tmp_path / "e.plan")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason=TRT_MISSING)
def test_gpu_selftest_passes(tmp_path):
    assert main(["selftest", "--gpu", "--out", str(tmp_path)]) == 0


def test_two_step_graphs_get_two_engines_and_the_same_tokens(
    default_export, default_calib, tmp_path
):
    """An export whose last scale runs step_long (int8 attention TensorRT cannot fuse there):
    one engine per step graph, each with the profiles of its own scales, one buffer set."""
    import dataclasses

    from sasq.exporter.attention_form import AttentionRules
    from sasq.exporter.qdq_config import QuantConfig
    from sasq.exporter.quantize import quantize

    rules = dataclasses.replace(AttentionRules.load(), int8_max_seq=14)
    q = quantize(default_export, default_calib, QuantConfig(target="tensorrt"), tmp_path / "q",
                 rules)  # fmt: skip
    plan = build_engine(q, tmp_path / "e.plan", SIM)
    info = load_plan_info(plan)
    assert {k: e.scales for k, e in info.engines.items()} == {"step": (0, 1, 2), "step_long": (3,)}
    assert (tmp_path / "e.step_long.plan").is_file()
    model = load_model()
    ort, trt = make_backend("ort", None, q), make_backend("trt", None, q, engine=plan)
    for seed in (0, 1):
        gc = GenerateConfig((1, 2, 3), seed=seed, batch=3)
        a, t = generate_many(model, ort, gc), generate_many(model, trt, gc)
        assert all(torch.equal(x, y) for x, y in zip(a.idx, t.idx, strict=True))


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks its absence")
def test_gpu_check_says_what_is_missing():
    """scripts/gpu_check.py's environment probe, the part of it a CPU machine can check:
    it names the missing GPU packages (it then times what it can and exits 0)."""
    import importlib.util as iu
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    spec = iu.spec_from_file_location("gpu_check", path)
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    env = mod.environment()
    assert "tensorrt" in env["missing"] and env["cuda_gpus"] == 0 and env["gpu"] is None
    assert not [m for m in env["missing"] if m in mod.CORE or m.startswith("sasq")]
    assert mod.main([]) == 2  # usage
