"""Library errors name the library's parameters, never a CLI flag (the CLI adds the flag:
test_cli's one-line errors still show it)."""

from __future__ import annotations

import pytest

import sasq.models as M
from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.calib.gps import GPSConfig, collect_stats
from sasq.engines.backends import make_backend
from sasq.engines.config import GenerateConfig
from sasq.engines.generate import generate_many, labels_for
from sasq.engines.trt_plan import BatchRange
from sasq.errors import UserError


def _raises(fn, param: str) -> UserError:
    with pytest.raises(UserError) as info:
        fn()
    e = info.value
    assert e.param == param and "--" not in str(e), (e.param, str(e))
    return e


def test_user_error_carries_its_parameter():
    assert UserError("x").param is None
    assert UserError("x", param="batch").param == "batch" and str(UserError("x")) == "x"


def test_library_errors_name_parameters_not_flags(tmp_path):
    cfg = M.load_model().cfg
    _raises(lambda: calibrate(tmp_path, CalibConfig(num_samples=0)), "num_samples")
    _raises(
        lambda: collect_stats(M.load_model(), GPSConfig(num_samples=0)), "GPSConfig.num_samples"
    )
    _raises(lambda: labels_for(cfg, None, 0), "n")
    _raises(lambda: labels_for(cfg, 99, 1), "cls")
    _raises(lambda: make_backend("ort", cfg), "onnx_dir")
    _raises(lambda: BatchRange.parse("1-2"), "batch_range")
    gc = GenerateConfig((0,), batch=0)
    _raises(lambda: generate_many(cfg, None, gc), "batch")
