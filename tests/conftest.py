"""Shared tiny-model builders for the tests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import sasq.models as M
from sasq.models.checkpoint import save_safetensors

# Fixtures that export or calibrate the embedded default model: ~15 s on an idle machine,
# over a minute on a busy 2-core one. A test that needs one (directly or through another
# fixture) is marked ``slow``, so ``make test-quick`` (``-m "not slow"``) runs without them.
SLOW_FIXTURES = frozenset({"default_export", "default_calib"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def random_tiny(seed: int = 0) -> M.LoadedModel:
    """The default's architecture, randomly initialised, with residual gates widened so that
    attention and every block matter (the official init starts them near zero)."""
    torch.manual_seed(seed)
    m = M.build(M.tiny_default())
    with torch.no_grad():
        for b in m.var.blocks:
            b.ada_lin[-1].weight.normal_(0, 0.05)
            b.ada_lin[-1].bias.normal_(0, 0.5)
        m.var.head.weight.normal_(0, 0.2)
    return m


def random_tiny_shared(seed: int = 0, depth: int = 3) -> M.LoadedModel:
    """The default's sizes with shared AdaLN (as VAR-d36) and ``depth`` blocks, randomly
    initialised, the shared linear and each block's ``ada_gss`` widened like ``random_tiny``
    so that every block's modulation differs and matters."""
    torch.manual_seed(seed)
    cfg = M.tiny_default()
    cfg = dataclasses.replace(cfg, var=dataclasses.replace(cfg.var, depth=depth, shared_aln=True))
    m = M.build(cfg)
    with torch.no_grad():
        m.var.shared_ada_lin[-1].weight.normal_(0, 0.05)
        m.var.shared_ada_lin[-1].bias.normal_(0, 0.5)
        for b in m.var.blocks:
            b.ada_gss.normal_(0, 0.3)
        m.var.head.weight.normal_(0, 0.2)
    return m


def save_model_dir(m: M.LoadedModel, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(json.loads(m.cfg.to_json())))
    save_safetensors(m.vqvae, d / "vqvae.safetensors")
    save_safetensors(m.var, d / "var.safetensors")
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_model_dir(random_tiny(), tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def default_export(tmp_path_factory) -> Path:
    """The embedded default model exported once per test session (about 15 s)."""
    from sasq.exporter import export_model

    out = tmp_path_factory.mktemp("default_export") / "fp"
    export_model(M.load_model(), out)
    return out


@pytest.fixture(scope="session")
def default_calib(default_export, tmp_path_factory):
    """The default export calibrated once per session (16 images, resampled)."""
    import warnings

    from sasq.calib.calibrate import CalibConfig, calibrate

    cfg = CalibConfig(num_samples=16, batch=16, progress=False, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small sample may not cover every class
        return calibrate(default_export, cfg).cache


# ----- the world of the hostile-input tests (test_hardening*.py) -----


@pytest.fixture(scope="module")
def shared(default_export, tiny_model_dir, tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """The FP export of the default model, a cache of it (2 samples) and its int8 export."""
    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.exporter.qdq_config import QuantConfig
    from sasq.exporter.quantize import quantize
    from sasq.quant.cache import load_cache, save_cache

    root = tmp_path_factory.mktemp("hardening")
    calib = root / "calib" / "calib.json"
    calib.parent.mkdir()
    cc = CalibConfig(num_samples=2, batch=2, threads=1, progress=False)
    with pytest.warns(UserWarning, match="cover only"):
        save_cache(calibrate(default_export, cc).cache, calib)
    int8 = quantize(default_export, load_cache(calib), QuantConfig(), root / "int8")
    return default_export, calib, int8, tiny_model_dir


@pytest.fixture
def world(shared, tmp_path):
    """A fresh sandbox for one case, beside the shared artifacts (``hostile_inputs.World``)."""
    from hostile_inputs import World

    return World(tmp_path, *shared)
