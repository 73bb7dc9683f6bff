"""exporter/u8s8.py: the ``ort`` target cannot saturate ONNX Runtime's u8 x s8 kernels.

Machine-independent: every integer GEMM ORT's CPU EP runs for the quantized step (read off
ORT's own optimized graph, ``int8_graph``) is u8 x s8 with operands whose pair sums fit
int16, for every setting of the target, while the full 8-bit form and the tensorrt target
have products that can saturate (so the check can fail). The forms themselves: 7-bit
weights, the tensorrt target's numbers untouched, the manifest record checked where read.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sasq.engines.int8_graph import int8_products
from sasq.engines.lint import LintConfig, Rule, lint
from sasq.errors import UserError
from sasq.exporter.manifest import load_manifest, verify
from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
from sasq.exporter.qdq_per_step import StepKey
from sasq.exporter.quantize import quantize, quantize_step
from sasq.exporter.u8s8 import SIGNED, Forms, U8S8Form, forms_for, read_record

SS = ShiftSumConfig(enabled=True, budget=0.05, cache_budget=0.2)  # copies on the default
SETTINGS = {
    "plain": {},
    "shift-sum": {"shift_sum": SS},
    "per-step": {"static_per_step": True},
    "W4A8": {"w_bits": 4},
    "W6A6": {"w_bits": 6, "a_bits": 6},
    "kv6": {"kv_bits": 6},
    "fp32-cache": {"kv_cache": "fp32", "shift_sum": SS},
}


@pytest.fixture(scope="module")
def fp_step(default_export):
    scales = load_manifest(default_export).scales
    key = StepKey("past_value_0", 2, tuple(s.past_len for s in scales))
    return onnx.load(str(default_export / "step.onnx")), key


def _products(fp_step, calib, **kw):
    model, key = fp_step
    q = quantize_step(copy.deepcopy(model), calib, QuantConfig(**kw), key)
    return int8_products(q.model), q


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_the_ort_target_cannot_saturate(fp_step, default_calib, setting):
    """Every u8 x s8 operand pair of the bounded ort target fits int16 (the bound is proven
    from the graph, not measured on this CPU), and it runs as many integer GEMMs as the
    full 8-bit form (nothing fell back to float)."""
    kw = SETTINGS[setting]
    bounded, q = _products(fp_step, default_calib, **kw)
    full, _ = _products(fp_step, default_calib, **kw, u8s8="full")
    assert [p.node for p in bounded] == [p.node for p in full]
    assert not [p.as_dict() for p in bounded if p.can_saturate]
    if kw.get("a_bits", 8) == 8:  # simulated narrow activations run as float products
        assert len(bounded) >= len(q.report.quantized)
        assert any(p.can_saturate for p in full)
    if kw.get("kv_cache") == "fp32":  # the float cache's attention: u8 x u8, exact anyway
        depth = sum(n.op_type == "Softmax" for n in fp_step[0].graph.node)
        assert sum(not p.u8s8 for p in bounded) == 2 * depth


def test_the_tensorrt_target_keeps_signed_full_range_int8(fp_step, default_calib):
    """TensorRT's rules: signed int8, zero point 0, full range; so on ORT's CPU EP its
    products can saturate (``ort_session`` runs such graphs as s8 x s8 where they would)."""
    products, q = _products(fp_step, default_calib, target="tensorrt")
    assert any(p.can_saturate for p in products)
    assert lint(q.model, LintConfig(float_nodes=q.report.float_nodes, int8_cache=True)) == []
    weights = [numpy_helper.to_array(t) for t in q.model.graph.initializer
               if t.name.endswith("_int8")]  # fmt: skip
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 127


def test_bounded_weights_use_64_steps_and_lint_for_their_target(fp_step, default_calib):
    _, q = _products(fp_step, default_calib)
    weights = [numpy_helper.to_array(t) for t in q.model.graph.initializer
               if t.name.endswith("_int8")]  # fmt: skip
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 64
    ort_rules = LintConfig(float_nodes=q.report.float_nodes, int8_cache=True, target="ort")
    assert lint(q.model, ort_rules) == []
    trt = lint(q.model, LintConfig(float_nodes=q.report.float_nodes, int8_cache=True))
    # uint8 queries / probabilities: not TensorRT's type (nor its parser's, for Q/DQ); the
    # new keys transposed as int8 (a Q that feeds a Transpose): no INT8 Transpose in its table
    want = {Rule.ZERO_POINT_TYPE, Rule.ZERO_POINT_NONZERO, Rule.UNSUPPORTED_DTYPE, Rule.QDQ_PAIR}
    assert {v.rule for v in trt} == want
    pairs = [v for v in trt if v.rule == Rule.QDQ_PAIR]
    assert all(v.node.endswith("_kstore_Q") and "Transpose" in v.message for v in pairs)


def test_forms_narrow_only_8bit_operands_of_the_ort_target():
    assert forms_for(True, U8S8Form.BOUNDED, 8, 8) == Forms(64, True, True)
    assert forms_for(True, U8S8Form.BOUNDED, 4, 8) == Forms(7, True, True)
    assert forms_for(True, U8S8Form.BOUNDED, 6, 6) == Forms(31, False, False)
    assert forms_for(True, U8S8Form.FULL, 8, 8) == SIGNED
    assert forms_for(False, U8S8Form.BOUNDED, 8, 8) == SIGNED
    assert forms_for(False, U8S8Form.BOUNDED, 6, 6) == forms_for(True, U8S8Form.FULL, 6, 6)
    assert forms_for(True, U8S8Form.FULL, 6, 6) == Forms(31, False, False)
    assert QuantConfig(target="tensorrt").forms == SIGNED
    with pytest.raises(UserError, match="'half' is not a valid U8S8Form"):
        QuantConfig(u8s8="half")


def test_the_manifest_records_the_form_and_it_is_checked_where_read(
    default_export, default_calib, tmp_path
):
    out = quantize(default_export, default_calib, QuantConfig(), tmp_path / "q")
    rec = read_record(verify(out).extra["quant"], "q")
    assert rec == {"form": "bounded", "weight_qmax": 64, "query": "uint8 zp 64, +-64 steps",
                   "probs": "uint8 zp 0"}  # fmt: skip
    assert read_record({}, "old") is None  # an export from before the record
    for bad in (
        {"form": "half", "weight_qmax": 64, "query": "", "probs": ""},
        {"form": "full", "weight_qmax": True, "query": "", "probs": ""},
        {"form": "full", "weight_qmax": 300, "query": "", "probs": ""},
        "bounded",
    ):
        with pytest.raises(UserError, match=r"^x: extra.quant.u8s8 is not a valid record"):
            read_record({"u8s8": bad}, "x")
    json.dumps(rec)  # plain JSON
