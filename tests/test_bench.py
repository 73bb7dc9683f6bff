"""The benchmark: structure of its result, positive medians, ratios that are the quotients
of the medians, and an atomically written JSON + markdown report."""

from __future__ import annotations

import json
import statistics

import pytest
from test_export import exported, tiny_model

import sasq.models as M
from sasq.errors import UserError
from sasq.tools.measure.bench import run_bench, write_report
from sasq.tools.measure.config import BenchConfig


@pytest.mark.slow  # 52 s on a busy 2-core machine
def test_bench_reports_medians_and_ratios_side_by_side(tmp_path_factory, tmp_path):
    onnx_dir = exported(tmp_path_factory, "inline")
    cfg = BenchConfig(batch_sizes=(1, 2), repeats=3, warmup=1, threads=1)
    res = run_bench(tiny_model(), onnx_dir, cfg)

    assert res["settings"]["repeats"] == 3 and res["settings"]["backends"] == ("torch", "ort")
    assert res["settings"]["model"]["onnx_bytes"] > 0
    assert {"platform", "cpu_count", "versions"} <= set(res["machine"])
    # the CPU's int8 features and each backend's int8 kernels (an FP export: none to run)
    assert res["machine"]["int8"]["u8s8_kernel"] and res["int8_kernels"]["torch"] is None
    ort_rec = res["int8_kernels"]["ort"]
    assert ort_rec["export_u8s8"] is None and ort_rec["cpu"] == res["machine"]["int8"]
    assert [r["batch"] for r in res["runs"]] == [1, 2]
    for run in res["runs"]:
        assert [s["l"] for s in run["scales"]] == [1, 4, 9, 16]
        for b in run["backends"].values():
            assert len(b["step_ms"]) == 4 and all(len(s) == 3 for s in b["step_ms"])
            assert b["step_ms_median"] == [statistics.median(s) for s in b["step_ms"]]
            assert all(m > 0 for m in b["step_ms_median"]) and b["e2e_ms_median"] > 0
            assert b["images_per_s"] == pytest.approx(run["batch"] * 1e3 / b["e2e_ms_median"])
            assert b["e2e_ms_min"] <= b["e2e_ms_median"] <= b["e2e_ms_max"]
            assert b["e2e_spread"] == pytest.approx(
                (b["e2e_ms_max"] - b["e2e_ms_min"]) / b["e2e_ms_median"]
            )
            assert all(
                lo <= m <= hi
                for lo, m, hi in zip(
                    b["step_ms_min"], b["step_ms_median"], b["step_ms_max"], strict=True
                )
            )
        t, o = run["backends"]["torch"], run["backends"]["ort"]
        r = run["ratios"]["ort/torch"]
        quotients = zip(o["step_ms_median"], t["step_ms_median"], strict=True)
        assert r["step"] == [a / b for a, b in quotients]
        assert r["e2e"] == o["e2e_ms_median"] / t["e2e_ms_median"]
        assert r["images_per_s"] == o["images_per_s"] / t["images_per_s"]

    js, md, png = write_report(res, tmp_path / "report")
    _valid_png(png)
    assert json.loads(js.read_text())["runs"][0]["ratios"] == res["runs"][0]["ratios"]
    text = md.read_text()
    assert "| backend | end-to-end ms, median | min | max | spread | speed-up vs torch |" in text
    assert "| torch |" in text and text.count("| 1.00x |") == 2  # the baseline, per batch
    assert "| scale | pn | l | past | torch ms | ort ms | ort/torch |" in text
    assert text.count("| images/s |") == 2
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "bench.json",
        "bench.md",
        "bench.png",
    ]


def test_bench_config_is_validated():
    with pytest.raises(UserError, match="unknown backends"):
        BenchConfig(backends=("torch", "tensorflow"))
    with pytest.raises(UserError):
        BenchConfig(repeats=0)


@pytest.mark.slow  # 35s on a busy 2-core machine
def test_bench_refuses_an_export_of_another_model(tmp_path_factory):
    import dataclasses

    other = tiny_model()
    other = dataclasses.replace(
        other, cfg=dataclasses.replace(other.cfg, sampling=M.SamplingConfig())
    )
    with pytest.raises(UserError, match="different model config"):
        run_bench(other, exported(tmp_path_factory, "inline"), BenchConfig(repeats=1))


def test_noisy_rows_and_a_loaded_machine_are_flagged():
    from sasq.tools.measure.bench import _warnings

    def row(ms):
        return {"e2e_ms_min": min(ms), "e2e_ms_max": max(ms),
                "e2e_spread": (max(ms) - min(ms)) / statistics.median(ms)}  # fmt: skip

    runs = [{"batch": 1, "backends": {"ort": row([100, 101, 102]), "int8": row([50, 60, 70])}}]
    quiet = _warnings(runs, load_before=0.1)
    assert len(quiet) == 1 and "int8" in quiet[0] and "spread 33%" in quiet[0]
    loaded = _warnings(runs, load_before=3.0)
    assert len(loaded) == 2 and "load average was 3.00" in loaded[0]


def _valid_png(path):
    """A PNG that PIL decodes fully, of nonzero size."""
    from PIL import Image

    assert path.suffix == ".png" and path.stat().st_size > 1000
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.width > 100 and im.height > 100


def test_bare_bench_names_the_flag_its_default_backends_need(tmp_path, capsys):
    """``sasq bench`` with no options runs torch,ort; ort needs an export, and the one-line
    error says which flag gives it (it said 'needs an export folder', naming none)."""
    from sasq.tools.cli import main

    assert main(["bench", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "add --onnx DIR" in err and "--backends" in err and err.count("\n") == 1, err
    assert not (tmp_path / "b").exists()
    # the same refusal from the Python API, before any backend is built
    with pytest.raises(UserError, match="--onnx"):
        run_bench(tiny_model(), None, BenchConfig(backends=("torch", "ort")))


def test_bench_help_names_its_plot_and_the_label_form(capsys):
    from sasq.tools.cli.entry import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "bench.json, bench.md and bench.png" in text
    assert "LABEL=DIR" in text and "int8=out/onnx_int8" in text
    assert "the ort backend runs; needed by the default --backends" in text
