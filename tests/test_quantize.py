"""exporter/quantize.py on the embedded default: a verified copy of the export with a lint-clean
Q/DQ step graph that generates close to the FP model; refusals leave nothing behind."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.engines.backends import make_backend
from sasq.engines.decode import generate
from sasq.engines.lint import config_for_export, lint
from sasq.errors import UserError
from sasq.exporter.manifest import load_manifest, verify
from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
from sasq.exporter.quantize import quantize
from sasq.metrics import sqnr_db, token_agreement
from sasq.models.config import ModelConfig
from sasq.quant.cache import load_cache, save_cache


@pytest.fixture(scope="module")
def cache(default_export, tmp_path_factory):
    """Calibrated once per session (4 samples), shared with test_fuse_shift_sum via a file."""
    path = tmp_path_factory.getbasetemp() / "default_calib.json"
    if not path.is_file():
        cfg = CalibConfig(num_samples=4, batch=4, progress=False, threads=1)
        with pytest.warns(UserWarning, match="cover only"):
            save_cache(calibrate(default_export, cfg).cache, path)
    return load_cache(path)


def _rollout(onnx_dir, n: int = 8):
    man = load_manifest(onnx_dir)
    mc = ModelConfig.from_dict(man.model_config)
    labels = torch.arange(n) % mc.var.num_classes
    backend = make_backend("ort", None, onnx_dir, threads=1)
    return generate(backend, labels, tuple(man.patch_nums), mc.sampling, 1000,
                    mc.var.num_classes, keep_logits=True)  # fmt: skip


def test_quantized_copy_is_verified_lint_clean_and_close(default_export, cache, tmp_path):
    cfg = QuantConfig(shift_sum=ShiftSumConfig(enabled=True))
    out = quantize(default_export, cache, cfg, tmp_path / "int8")
    assert out == tmp_path / "int8"
    assert [p.name for p in tmp_path.iterdir()] == ["int8"]  # no temporary folder left
    man, src = verify(out), load_manifest(default_export)
    assert man.files.keys() == src.files.keys()
    for name, entry in src.files.items():
        assert (man.files[name].sha256 == entry.sha256) == (name != "step.onnx"), name
    quant = man.extra["quant"]
    assert quant["w_bits"] == 8 and quant["shift_sum"]["enabled"] and quant["shift_sum"]["fuse"]
    depth = man.dims["depth"]
    # float: only shift-and-sum's column picks, one per layer (the AdaLN linears run once per
    # image, in start.onnx)
    assert (
        sorted(quant["kept_float"].values())
        == ["shift-and-sum column pick (float, before Q)"] * depth
    )
    assert len(quant["quantized"]) == 6 * depth + 1  # qkv, QK, AV, proj, fc1, fc2; head
    assert sum(map(sum, quant["shift_sum_extra_keys"].values())) > 0
    step = out / "step.onnx"
    onnx.checker.check_model(str(step), full_check=True)
    assert lint(step, config_for_export(quant)) == []  # the ort target's rules
    # int8 linears; the AdaLN GEMVs (about 40% of the weights here) stay float
    assert step.stat().st_size < 0.6 * (default_export / "step.onnx").stat().st_size

    fp, q = _rollout(default_export), _rollout(out)
    agree = token_agreement(fp.idx, q.idx)
    assert agree[0] >= 0.75 and np.mean(agree) >= 0.6, agree
    # scale 0 sees identical inputs in both rollouts: its logits are a teacher-forced check
    assert 30.0 < sqnr_db(fp.logits[0], q.logits[0]) < 80.0


def test_cache_of_another_step_graph_is_refused(default_export, cache, tmp_path):
    other = dataclasses.replace(cache, model_hash="f" * 64)
    with pytest.raises(UserError, match="another step graph") as e:
        quantize(default_export, other, QuantConfig(), tmp_path / "q")
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


def test_failure_leaves_nothing_and_source_is_protected(default_export, cache, tmp_path):
    ranges = {k: v for k, v in cache.ranges.items() if not k.startswith("gelu")}
    bad = dataclasses.replace(cache, ranges=ranges)
    with pytest.raises(UserError, match="no range for gelu"):
        quantize(default_export, bad, QuantConfig(), tmp_path / "q")
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="must not replace its FP source"):
        quantize(default_export, cache, QuantConfig(), default_export)
    # fc2 (the FC after GELU) kept float by configuration: gelu needs no range then
    out = quantize(default_export, bad, QuantConfig(float_nodes=("*ffn.fc2*",)), tmp_path / "q")
    quant = verify(out).extra["quant"]
    assert (
        list(quant["kept_float"].values()).count("float_nodes") == load_manifest(out).dims["depth"]
    )
    again = quantize(default_export, cache, QuantConfig(w_bits=8), tmp_path / "q")  # replaces
    assert verify(again).extra["quant"]["float_nodes"] == []


def test_static_per_step_with_shift_sum_runs_and_lints(default_export, cache, tmp_path):
    cfg = QuantConfig(static_per_step=True, shift_sum=ShiftSumConfig(enabled=True))
    out = quantize(default_export, cache, cfg, tmp_path / "ps")
    quant = verify(out).extra["quant"]
    assert quant["static_per_step"] is True
    step = onnx.load(str(out / "step.onnx"))
    ops = [n.op_type for n in step.graph.node]
    assert ops.count("Shape") >= 1 and any(n.name == "per_step" for n in step.graph.node)
    assert lint(step, config_for_export(quant)) == []  # the ort target's rules
    fp, q = _rollout(default_export), _rollout(out)
    assert 20.0 < sqnr_db(fp.logits[0], q.logits[0]) < 80.0
    assert token_agreement(fp.idx, q.idx)[0] >= 0.5
