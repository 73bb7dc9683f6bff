"""The demo's report.md and summary: one document, short tables, rounded, no raw JSON."""

from __future__ import annotations

from pathlib import Path

from sasq.tools.apps.demo_report import demo_report, demo_summary


def _iv(v, lo, hi):
    return {"value": v, "lo": lo, "hi": hi}


def _cell(ta):
    return {
        "token_agreement": _iv(ta, ta - 0.0123, ta + 0.0117),
        "FID2FP": _iv(1.2345678, 0.9, 1.61),
        "FID": _iv(30.0, 28.0, 32.0),
        "IS": _iv(8.0, 7.9, 8.1),
        "class_acc": _iv(0.9666666, 0.93, 0.99),
    }


def _inputs():
    stages = {
        "export": {"folder": "onnx_fp", "seconds": 33.71},
        "calibrate": {"tensors": 33, "seconds": 13.52},
        "generate ort fp32": {"grid": "fp_ort.png", "seconds": 1.234,
                              "token_agreement_vs_torch_fp": [1.0, 1.0, 1.0, 1.0]},
        "generate int8-ss": {"grid": "x.png", "seconds": 0.8361111111111111,
                             "token_agreement_vs_torch_fp": [1.0, 0.96875, 0.83611111111, 0.7]},
        "eval": {"seconds": 150.2},
        "bench": {"seconds": 41.0},
    }  # fmt: skip
    ev = {
        "config": {"bits": ["W8A8"]},
        "samples": 300,
        "table": {"FP": {"W8A8": _cell(1.0)}, "FP (seed+1)": {"W8A8": _cell(0.5)},
                  "plain": {"W8A8": _cell(0.8361111111111111)}, "both": {"W8A8": _cell(0.85)}},
    }  # fmt: skip

    def backend(ms, spread):
        return {"e2e_ms_median": ms, "e2e_spread": spread, "images_per_s": 1e3 / ms}

    bench = {
        "settings": {"repeats": 5},
        "machine": {"cpu_count": 2, "versions": {"torch": "2.9"},
                    "loadavg_1min": {"before": 7.0556640625, "after": 7.2}},
        "runs": [{"batch": b, "backends": {"ort": backend(100.0 * b, 0.03),
                                           "int8-ss": backend(61.0 * b, 0.21)}}
                 for b in (1, 8)],
        "warnings": ["1-min load average was 7.06 before the run: rerun on a quiet machine"],
    }  # fmt: skip
    bench["machine"]["int8"] = {"machine": "x86_64", "int8_flags": ["avx2"],
                                "u8s8_kernel": "avx2", "u8s8_saturates": True}  # fmt: skip
    bench["int8_kernels"] = {
        "ort": {"kernels": "u8s8", "reason": "no int8 product", "export_u8s8": None},
        "int8-ss": {"kernels": "u8s8", "reason": "every u8 x s8 operand pair fits int16",
                    "export_u8s8": {"form": "bounded"}},
    }  # fmt: skip
    return stages, ev, bench


def test_report_is_one_document_without_json():
    stages, ev, bench = _inputs()
    md = demo_report(stages, ev, bench, "/m/default")
    lines = md.splitlines()
    assert sum(line.startswith("# ") for line in lines) == 1 and lines[0] == "# sasq demo"
    assert "{" not in md and "```" not in md
    assert "0.8361111111111111" not in md and "7.0556640625" not in md
    assert "| int8-ss | 100 / 97 / 84 / 70 |" in md  # whole percent per scale
    assert "| plain | 0.836 ± 0.012 |" in md  # to the digits of the interval
    assert "| int8-ss | 1.64x (±10%) | 1.64x (±10%) |" in md
    assert "load average 7.06" in md and "Warnings" in md
    assert "| eval | 150 |" in md and "| generate ort fp32 | 1.2 |" in md
    assert max(len(line.split("|")) for line in lines) <= 6  # short tables
    # where the int8 numbers came from: the CPU and each backend's kernels (issue 27)
    assert "kernel here: avx2, saturates on 8-bit operands" in md
    assert "- int8-ss: u8s8 (every u8 x s8 operand pair fits int16); export u8s8 form bounded" in md


def test_report_without_eval_and_the_short_summary(tmp_path):
    stages, _, bench = _inputs()
    md = demo_report(stages, None, bench, "/m/other")
    assert "Quality against FP" not in md and "{" not in md
    s = demo_summary(stages, _inputs()[1], bench, Path("out/demo/report.md"))
    assert len(s.splitlines()) <= 6 and s.splitlines()[-1] == "report: out/demo/report.md"
    assert "both 0.850 ± 0.012" in s and "int8-ss 1.64x" in s


def test_each_token_agreement_and_image_says_what_it_is():
    """Two token agreements appear (the demo's grids per scale, the eval's mean over scales
    of its own samples and exports): each is labelled, and they are told apart. The side by
    side image shows int8 with shift-and-sum, and says so; plain int8 is the other file."""
    stages, ev, bench = _inputs()
    md = demo_report(stages, ev, bench, "/m/default")
    assert "## Token agreement with PyTorch FP, free running, per scale" in md
    assert "| row | token agreement, mean over scales | FID2FP | class acc |" in md
    assert "free running too, but the mean over scales, on the eval's 300 samples" in md
    assert "not the per-scale numbers above" in md
    section = md.split("## FP32 vs int8 with shift-and-sum (same seeds)")[1].split("## ")[0]
    assert "![PyTorch FP32 vs int8 with shift-and-sum](fp_vs_int8.png)" in section
    assert "right W8A8 int8 with shift-and-sum under ONNX Runtime (`int8-ss_ort.png`)" in section
    assert "`int8_ort.png` (plain int8, no shift-and-sum)" in section
    assert md.count("plain int8") == 1
    s = demo_summary(stages, ev, bench, Path("report.md"))
    assert "token agreement with torch FP (free running, mean over scales):" in s
    assert "best token agreement (free running, mean over scales) both" in s


def test_the_steps_own_ratio_stands_beside_the_end_to_end_one():
    """On the small embedded model int8 shows in the decode steps, not end to end: the
    report gives the steps' ratio (summed step medians) and says why the two differ."""
    stages, ev, bench = _inputs()
    bench["settings"]["model"] = {"embed_dim": 128}
    for run in bench["runs"]:
        run["backends"]["ort"]["step_ms_median"] = [10.0, 20.0, 30.0]  # 60 of 100 x B ms
        run["backends"]["int8-ss"]["step_ms_median"] = [5.0, 10.0, 15.0]  # 30
    md = demo_report(stages, ev, bench, "/m/default")
    assert "Decode steps alone at batch 8 (the part int8 quantizes), over ort: int8-ss 2.00x" in md
    assert "is 128 wide: its steps are 8% of ort's end-to-end time" in md  # 60 / 800
    # a bench without step times (an older one) keeps the end-to-end table alone
    _, _, old = _inputs()
    assert "Decode steps alone" not in demo_report(stages, ev, old, "/m/default")
