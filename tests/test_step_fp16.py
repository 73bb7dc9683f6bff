"""``sasq export --dtype fp16``: the step graph's floats in fp16 (weights in external data here),
its I/O and cache types in the manifest, the export runs under ONNX Runtime's CPU EP and
stays within fp16 round-off of the PyTorch model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import random_tiny

from sasq.engines.backends import make_backend
from sasq.engines.decode import generate
from sasq.exporter import ExportConfig, export_model, verify
from sasq.exporter.graph_types import value_types

U = 2.0**-11


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "onnx"
    cfg = ExportConfig(dtype="fp16", external_data_threshold=0, more_smooth=False, progress=False)
    return random_tiny(), export_model(random_tiny(), out, cfg), out


def test_manifest_records_types_and_what_stayed_fp32(fp16_export):
    model, man, out = fp16_export
    assert verify(out) == man
    step = man.graphs["step"]
    dtypes = {t.name: t.dtype for t in (*step.inputs, *step.outputs)}
    assert dtypes["x_BlC"] == dtypes["mod_BMC"] == dtypes["logits"] == "FLOAT"
    assert {dtypes[c.input] for c in man.cache} == {"FLOAT16"} == {c.dtype for c in man.cache}
    assert step.external_data == "step.onnx.data"
    rec = man.extra["fp16"]
    assert rec["io"]["present_key_0"] == "FLOAT16" and rec["casts"] > 0
    assert {w.split(":")[0] for w in rec["kept_fp32"].values()} == {
        "ReduceL2", "constant 1e-12 rounds to 0 in fp16"
    }  # fmt: skip
    assert man.extra["export_config"]["dtype"] == "fp16"
    m = onnx.load(str(out / "step.onnx"))
    onnx.checker.check_model(str(out / "step.onnx"), full_check=True)
    types = value_types(m)
    mm = [n for n in m.graph.node if n.op_type == "MatMul"]
    assert mm and all(types[n.input[1]] == onnx.TensorProto.FLOAT16 for n in mm)


def test_ort_runs_the_fp16_export_within_fp16_round_off_of_torch(fp16_export):
    model, man, out = fp16_export
    labels = torch.arange(4) % model.var.num_classes
    pns, sampling = tuple(model.var.patch_nums), model.cfg.sampling
    K = model.var.num_classes
    g_ref = generate(make_backend("torch", model), labels, pns, sampling, 0, K, keep_logits=True)
    g16 = generate(make_backend("ort", None, out), labels, pns, sampling, 0, K, keep_logits=True)
    agree = np.mean(
        [(a == b).float().mean().item() for a, b in zip(g_ref.idx, g16.idx, strict=True)]
    )
    assert agree >= 0.9  # sampling from near-equal logits draws the same tokens
    # Envelope: each of the depth blocks rounds its activations about a dozen times (u
    # each, relative to the largest logit); the first scale, before any token differs.
    a, b = g_ref.logits[0], g16.logits[0]
    err = (a - b).abs().max().item() / a.abs().max().item()
    assert 0 < err <= 12 * model.var.depth * U
