"""Calibration rollouts on the embedded default: resampling, cache, DGC, ORT interop."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.calib.data_reader import FeedsReader, ranges_from_reader, record_step_feeds
from sasq.errors import UserError
from sasq.quant.cache import load_cache, save_cache
from sasq.quant.targets import OpKind
from sasq.tools.cli import main


@pytest.fixture(scope="module")
def plain(default_export):
    return calibrate(
        default_export,
        CalibConfig(num_samples=32, resample="none", observer="minmax", progress=False),
    )


@pytest.fixture(scope="module")
def resampled(default_export):
    return calibrate(default_export, CalibConfig(num_samples=32, observer="minmax", progress=False))


def test_resampling_halves_the_token_histogram_distance_at_32_images(plain, resampled):
    # TV between the token histogram and the mean predicted distribution, per scale.
    for si, (before, _) in plain.tv_by_scale.items():
        after = resampled.tv_by_scale[si][1]
        assert after <= 0.55 * before, (si, before, after)
    total_plain = sum(b for b, _ in plain.tv_by_scale.values())
    total_ours = sum(a for _, a in resampled.tv_by_scale.values())
    assert total_ours <= 0.5 * total_plain


def test_ranges_cover_every_quantizable_input_per_step(plain):
    cache = plain.cache
    names = {a for t in plain.targets for a in t.activations}
    assert set(cache.ranges) == names
    SN = 4
    for name, r in cache.ranges.items():
        assert len(r.steps) == SN
        assert r.amax == pytest.approx(max(r.steps), rel=1e-6), name  # minmax: max of steps
        assert r.amax > 0, name


def test_attention_statistics_are_distributions_over_keys(plain):
    av = [t.node for t in plain.targets if t.kind == OpKind.ATTN_AV]
    assert set(plain.cache.attention) == set(av) and len(av) == 4  # depth 4
    for per_step in plain.cache.attention.values():
        assert [len(s) for s in per_step] == [1, 5, 14, 30]  # keys seen at each scale
        for s in per_step:
            assert sum(s) == pytest.approx(1.0, abs=1e-5)  # mean over queries of softmax rows


def test_cache_round_trip_and_refusal_for_another_model(plain, tmp_path):
    path = tmp_path / "calib.json"
    save_cache(plain.cache, path)
    assert load_cache(path, expect_model_hash=plain.cache.model_hash) == plain.cache
    with pytest.raises(UserError, match="another model"):
        load_cache(path, expect_model_hash="0" * 64)


def test_dgc_selection_records_only_the_chosen_rows(default_export):
    r = calibrate(
        default_export,
        CalibConfig(num_samples=8, selection="dgc", observer="minmax", batch=8, progress=False),
    )
    assert r.cache.settings.selection.value == "dgc"
    assert all(v.amax > 0 for v in r.cache.ranges.values())


def test_ort_data_reader_gives_our_ranges_and_feeds_quantize_static(
    default_export, plain, tmp_path
):
    reader = record_step_feeds(
        default_export, CalibConfig(num_samples=32, resample="none", progress=False)
    )
    assert isinstance(reader, FeedsReader) and len(reader) == 4  # 1 batch of 32 x 4 scales
    step = onnx.load(str(default_export / "step.onnx"))
    ranges = ranges_from_reader(step, reader)
    for name, r in ranges.items():  # the same data, so minmax ranges agree exactly
        assert r.amax == pytest.approx(plain.cache.ranges[name].amax, rel=1e-6), name
    from onnxruntime.quantization import QuantType, quantize_static

    reader.rewind()
    out = tmp_path / "peer.onnx"
    quantize_static(
        str(default_export / "step.onnx"),
        str(out),
        reader,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node) > 10


def test_calibrate_cli_writes_cache_and_reports_tv(default_export, tmp_path, capsys):
    out = tmp_path / "calib.json"
    rc = main(
        [
            "calibrate",
            "--onnx",
            str(default_export),
            "--n",
            "16",
            "--observer",
            "percentile",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr()
    report = json.loads(printed.out)  # stdout stays JSON; the closing line is on stderr
    assert printed.err.strip().splitlines()[-1] == f"sasq calibrate: wrote {out}"
    # 8 per block (inputs of qkv, proj, fc1, fc2, QK's q and k, AV's probs and v) + head
    assert report["tensors"] == 8 * 4 + 1 and set(report["tv_by_scale"]) == {"0", "1", "2", "3"}
    assert json.loads(out.read_text())["settings"]["observer"] == "percentile"
    assert main(["calibrate", "--onnx", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_nan_activations_warn_not_crash():
    from sasq.calib.observers import make_observer

    o = make_observer("entropy")
    o.update(np.array([1.0, np.nan, -2.0, np.inf], np.float32))
    assert o.range() == pytest.approx(2.0, rel=0.01) and "non-finite" in (o.warning or "")


def test_a_quantized_export_is_refused_in_one_line(default_export, default_calib, tmp_path, capsys):
    """Calibrating the int8 copy would measure its own rounding and key the cache to a graph
    no FP export has: refused, naming the folder and the fix."""
    from sasq.exporter.qdq_config import QuantConfig
    from sasq.exporter.quantize import quantize

    q = quantize(default_export, default_calib, QuantConfig(), tmp_path / "int8")
    with pytest.raises(UserError, match="quantized export.*calibrate the FP export"):
        calibrate(q, CalibConfig(num_samples=2, progress=False))
    rc = main(["calibrate", "--onnx", str(q), "--n", "2", "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "quantized export" in err
    assert not (tmp_path / "c.json").exists()
