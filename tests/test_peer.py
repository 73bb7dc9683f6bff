"""The ORT peer quantizer on the same calibration data: a runnable derived export."""

from __future__ import annotations

import onnx
import pytest

from sasq.calib.calibrate import CalibConfig
from sasq.calib.data_reader import record_step_feeds
from sasq.engines.backends import make_backend
from sasq.engines.config import GenerateConfig
from sasq.engines.generate import generate_many
from sasq.exporter import attention_chains, verify
from sasq.exporter.peer import peer_quantize
from sasq.metrics import token_agreement
from sasq.models import load_model


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


def test_linears_only_peer_leaves_attention_float(default_export, reader, tmp_path):
    out = peer_quantize(default_export, reader, "minmax", tmp_path / "lin", scope="linears")
    assert verify(out).extra["peer"]["scope"] == "linears"
    step = onnx.load(str(out / "step.onnx"))
    producers = {o: n for n in step.graph.node for o in n.output}
    chains = attention_chains(default_export / "step.onnx")  # node names are kept
    assert len(chains) == verify(out).dims["depth"]
    for qk, _, av in chains:  # neither attention product reads a DequantizeLinear
        for node in (n for n in step.graph.node if n.name in (qk, av)):
            kinds = [producers[x].op_type for x in node.input if x in producers]
            assert "DequantizeLinear" not in kinds, (node.name, kinds)
    dq_matmuls = [
        n
        for n in step.graph.node
        if n.op_type == "MatMul"
        and any(
            producers.get(x) is not None and producers[x].op_type == "DequantizeLinear"
            for x in n.input
        )
    ]
    assert len(dq_matmuls) == 4 * verify(out).dims["depth"] + 1  # qkv, proj, fc1, fc2; head


def test_ort_log_noise_does_not_reach_the_user(default_export, reader, tmp_path, capsys, caplog):
    """quantize_static logs "Axis 1 is out-of-range ..." and "Please consider to run
    pre-processing ..." through the root logger: silenced during the call, and only then."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with caplog.at_level(logging.DEBUG):  # whatever the root's level, nothing is emitted
        peer_quantize(default_export, reader, "minmax", tmp_path / "quiet")
    heard = caplog.text + capsys.readouterr().err
    assert "out-of-range" not in heard and "pre-processing" not in heard, heard
    assert root.handlers == handlers  # no handler left behind or installed
    assert root.level == logging.DEBUG or root.level == level
