"""Gain-projected scaling: the fold keeps the FP function, the scales cut quantization error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import random_tiny

import sasq.models as M
from sasq.calib.gps import (
    GPSConfig,
    apply_gps,
    fold_scales,
    gps_scales,
    gps_targets,
    output_sqnr,
)
from sasq.tools.cli import main


def _first_step_logits(m: M.LoadedModel) -> torch.Tensor:
    torch.manual_seed(0)
    labels = torch.arange(6) % m.var.num_classes
    cond = m.var.class_cond(labels)
    mod = m.var.modulation(cond)
    logits, past = m.var.decode_step(m.var.first_input(cond), mod, None)
    x = torch.randn(6, 4, m.var.C)  # any second-scale input exercises the cache path too
    logits2, _ = m.var.decode_step(x + m.var.lvl_pos(1), mod, past)
    return torch.cat([logits.flatten(), logits2.flatten()])


@torch.no_grad()
def test_fold_keeps_the_fp_function_for_any_scales():
    m = random_tiny()
    g = torch.Generator().manual_seed(1)
    scales = {
        name: torch.exp(torch.empty(w.shape[1]).uniform_(-2.3, 2.3, generator=g))  # 0.1 .. 10
        for name, _mod, w, *_ in gps_targets(m)
    }
    before, after = _first_step_logits(m), _first_step_logits(fold_scales(m, scales))
    assert (after - before).abs().max() <= 1e-4 * before.abs().max()
    # the fold changed the weights (a no-op fold would also pass the check above)
    assert not torch.equal(m.var.head.weight, fold_scales(m, scales).var.head.weight)


def _outlier_layer(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 64, generator=g)
    x[:, :3] *= 25.0  # three outlier channels, as after AdaLN modulation
    w = torch.randn(96, 64, generator=g) * 0.05
    return x, w


def test_gps_beats_no_scaling_and_smoothquant_on_outlier_channels():
    x, w = _outlier_layer()
    s = gps_scales(x.abs().amax(0), x, w, 8, 8)
    smooth = (x.abs().amax(0) / w.abs().amax(0)).sqrt()  # SmoothQuant, alpha 0.5
    none = output_sqnr(x, w, torch.ones(64), 8, 8)
    sq = output_sqnr(x, w, smooth, 8, 8)
    gps = output_sqnr(x, w, s, 8, 8)
    assert gps >= none + 10.0  # outliers cost about 25x in activation step without scaling
    assert gps >= sq + 0.3


def test_scaled_channels_never_outgrow_the_anchor():
    x, w = _outlier_layer(1)
    amax = x.abs().amax(0)
    s = gps_scales(amax, x, w, 8, 8)
    after = amax / s
    assert float(after.max()) > float(after.median())  # channels did move (ties at the cap)
    assert float(after.max()) == pytest.approx(float(after[amax.argmax()]), rel=1e-6)


@pytest.mark.slow  # 12s on a busy 2-core machine
def test_default_model_gps_w8a8_gains_on_every_layer():
    model = M.load_model()
    folded, summary = apply_gps(model, GPSConfig(num_samples=16, progress=False))
    layers = summary["layers"]
    assert len(layers) == 2 * model.var.depth + 1
    gains = [v["sqnr_db_gps"] - v["sqnr_db_before"] for v in layers.values()]
    assert min(gains) >= 0.5, gains  # measured +1.6 .. +3.4 dB at 32 samples
    assert summary["applied"] == len(layers)
    before, after = _first_step_logits(model), _first_step_logits(folded)
    assert (after - before).abs().max() <= 1e-4 * before.abs().max()


def test_gps_falls_back_where_it_would_hurt():
    model = M.load_model()
    _, summary = apply_gps(model, GPSConfig(num_samples=8, w_bits=4, a_bits=8, progress=False))
    for name, v in summary["layers"].items():
        assert v["applied"] == (v["sqnr_db_gps"] > v["sqnr_db_before"]), name


@pytest.mark.slow  # 59 s on a busy 2-core machine
def test_cli_export_gps_records_the_scales_and_keeps_tokens(tmp_path, capsys):
    from sasq.engines.config import GenerateConfig
    from sasq.engines.generate import generate_many
    from sasq.engines.ort_backend import OrtBackend
    from sasq.engines.torch_backend import TorchBackend

    out = tmp_path / "fp_gps"
    assert main(["export", "--out", str(out), "--gps", "--gps-n", "8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["gps"]["applied"] == printed["gps"]["layers"] == 9
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["gps"]["layers"]["head"]["applied"] is True
    model = M.load_model()
    gc = GenerateConfig(tuple(range(10)), seed=3, batch=10)
    ref = generate_many(model.cfg, TorchBackend(model), gc)
    got = generate_many(model.cfg, OrtBackend(out), gc)
    agree = np.mean([(a == b).float().mean().item() for a, b in zip(ref.idx, got.idx, strict=True)])
    assert agree >= 0.99  # same FP function; float rounding may flip a near-tie token


def test_cli_export_gps_refuses_zero_samples(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "x"), "--gps", "--gps-n", "0"]) == 2
    err = capsys.readouterr().err
    assert "argument --gps-n: must be in 1..1000000, got 0" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
