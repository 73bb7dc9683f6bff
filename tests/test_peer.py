"""The ORT peer quantizer on the same calibration data: a runnable derived export."""

from __future__ import annotations

import onnx
import pytest

from sasq.calib.calibrate import CalibConfig
from sasq.calib.data_reader import record_step_feeds
from sasq.exporter import verify
from sasq.exporter.peer import peer_quantize
from sasq.models import load_model
from sasq.tools.generate import GenerateConfig, generate_many, make_backend
from sasq.tools.metrics import token_agreement


@pytest.fixture(scope="module")
def reader(default_export):
    return record_step_feeds(default_export, CalibConfig(num_samples=8, progress=False))


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_peer_export_runs_and_stays_close_to_fp(default_export, reader, tmp_path, method):
    out = peer_quantize(default_export, reader, method, tmp_path / method)
    manifest = verify(out)  # hashes of the derived folder are consistent
    assert manifest.extra["peer"]["method"] == method
    step = onnx.load(str(out / "step.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in step.graph.node) >= 30
    cfg = load_model().cfg
    labels = tuple(i % 10 for i in range(40))
    fp = generate_many(cfg, make_backend("ort", None, default_export), GenerateConfig(labels))
    q = generate_many(cfg, make_backend("ort", None, out), GenerateConfig(labels))
    agree = token_agreement(fp.idx, q.idx)
    assert agree[0] >= 0.85 and agree[1] >= 0.6, agree
