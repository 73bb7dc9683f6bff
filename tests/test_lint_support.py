"""The lint against TensorRT 10's and 11's ONNX parser tables (engines/trt_support/*.json):
unsupported ops and dtypes are flagged per version; what the tables allow passes."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from sasq.engines import trt_ops
from sasq.engines.lint import LintConfig, Rule, Target, lint
from sasq.engines.trt_ops import TrtVersion, support_table


def _model(nodes, inputs, outputs, opset: int = 20, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name: str, t: int, shape=(2, 4)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, t, list(shape))


def found(m: onnx.ModelProto, version: str = "10", **kw) -> list[tuple[Rule, str]]:
    cfg = LintConfig(trt_version=version, coverage="touched", **kw)
    return [(v.rule, v.node) for v in lint(m, cfg)]


def test_tables_are_data_with_their_source():
    for v in TrtVersion:
        t = support_table(v)
        d = json.loads((Path(trt_ops.__file__).with_name("trt_support") / f"trt{v.value}.json")
                       .read_text())  # fmt: skip
        assert t.major == int(v.value) and d["source"]["url"].startswith("https://github.com/")
        assert len(t.ops) >= 200 and t.accepts("MatMul", "FP16") and not t.accepts("MatMul", "INT8")
        assert t.accepts("DequantizeLinear", "FP8") and t.accepts("QuantizeLinear", "FP16")
    assert support_table("10").version == "10.15" and support_table("11").version == "11.2"


def test_an_op_one_version_lacks_is_flagged_for_that_version_only():
    # DFT: "N" in the TensorRT 10.15 table, "Y" (FP32, FP16, BF16) in 11.2's
    m = _model(
        [helper.make_node("DFT", ["x"], ["y"], name="dft")],
        [_vi("x", TensorProto.FLOAT, (1, 8, 2))],
        [_vi("y", TensorProto.FLOAT, (1, 8, 2))],
    )
    assert found(m, "10") == [(Rule.UNSUPPORTED_OP, "dft")]
    assert found(m, "11") == []


def test_an_unknown_or_custom_op_is_flagged():
    m = _model(
        [
            helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="mmi"),
            helper.make_node("Gelu", ["x"], ["z"], name="fast", domain="com.microsoft"),
        ],
        [
            _vi("a", TensorProto.INT8),
            _vi("b", TensorProto.INT8, (4, 2)),
            _vi("x", TensorProto.FLOAT),
        ],  # fmt: skip
        [_vi("y", TensorProto.INT32, (2, 2)), _vi("z", TensorProto.FLOAT)],
    )
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    for v in ("10", "11"):
        assert sorted(found(m, v)) == [(Rule.UNSUPPORTED_OP, "fast"), (Rule.UNSUPPORTED_OP, "mmi")]
    assert found(m, extra_ops=frozenset({"MatMulInteger", "com.microsoft::Gelu"})) == []


@pytest.mark.parametrize("version", ["10", "11"])
def test_a_supported_op_on_a_type_its_row_lacks_is_flagged(version):
    # MatMul lists FP32, FP16, BF16: an INT32 MatMul does not parse; Concat of FP8 tensors
    # is in neither the table nor TensorRT's Concatenation layer types
    f8 = TensorProto.FLOAT8E4M3FN
    m = _model(
        [
            helper.make_node("MatMul", ["a", "b"], ["y"], name="imm"),
            helper.make_node("Concat", ["p", "q"], ["c"], name="cat8", axis=0),
            helper.make_node("MatMul", ["h", "w"], ["z"], name="hmm"),
        ],
        [_vi("a", TensorProto.INT32), _vi("b", TensorProto.INT32, (4, 2)), _vi("p", f8),
         _vi("q", f8), _vi("h", TensorProto.FLOAT16), _vi("w", TensorProto.FLOAT16, (4, 2))],
        [_vi("y", TensorProto.INT32, (2, 2)), _vi("c", f8, (4, 4)),
         _vi("z", TensorProto.FLOAT16, (2, 2))],
    )  # fmt: skip
    got = lint(m, LintConfig(trt_version=version, coverage="touched"))
    assert sorted((v.rule, v.node) for v in got) == [
        (Rule.UNSUPPORTED_DTYPE, "cat8"), (Rule.UNSUPPORTED_DTYPE, "imm")
    ]  # fmt: skip
    msg = next(str(v) for v in got if v.node == "imm")
    assert "MatMul on INT32" in msg and "BF16, FP16, FP32" in msg


def test_int8_concat_and_shape_of_int8_pass_the_overlay():
    # the int8 KV cache appends by an INT8 Concat (TensorRT's Concatenation layer takes
    # int8) and reads its length by Shape (dims only)
    i8 = TensorProto.INT8
    m = _model(
        [
            helper.make_node("Concat", ["past", "new"], ["present"], name="append", axis=0),
            helper.make_node("Shape", ["present"], ["n"], name="len"),
        ],
        [_vi("past", i8), _vi("new", i8)],
        [_vi("present", i8, (4, 4)), _vi("n", TensorProto.INT64, (2,))],
    )
    assert found(m, "10") == found(m, "11") == []


def test_graph_io_of_a_type_the_parser_never_takes():
    m = _model(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        [_vi("x", TensorProto.INT16)],
        [_vi("y", TensorProto.INT16)],
    )
    got = found(m)
    assert (Rule.UNSUPPORTED_DTYPE, "x") in got and (Rule.UNSUPPORTED_DTYPE, "y") in got


def test_opset_outside_the_parsers_range():
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        [_vi("x", TensorProto.FLOAT)],
        [_vi("y", TensorProto.FLOAT)],
        opset=25,
    )
    assert found(m, "11") == [(Rule.OPSET, "<model>")]


def test_the_ort_target_is_not_held_to_tensorrts_table():
    m = _model(
        [helper.make_node("DFT", ["x"], ["y"], name="dft")],
        [_vi("x", TensorProto.FLOAT, (1, 8, 2))],
        [_vi("y", TensorProto.FLOAT, (1, 8, 2))],
    )
    assert found(m, target=Target.ORT) == []


def test_unknown_version_is_a_user_error():
    from sasq.errors import UserError

    with pytest.raises(UserError, match="choose 10 or 11"):
        support_table("9")


def test_cli_lint_checks_the_chosen_version(tmp_path, capsys):
    from sasq.tools.cli import main

    m = _model(
        [helper.make_node("DFT", ["x"], ["y"], name="dft")],
        [_vi("x", TensorProto.FLOAT, (1, 8, 2))],
        [_vi("y", TensorProto.FLOAT, (1, 8, 2))],
    )
    onnx.save(m, tmp_path / "dft.onnx")
    assert main(["lint", str(tmp_path / "dft.onnx"), "--trt-version", "10"]) == 1
    out = capsys.readouterr().out
    assert "TensorRT 10.15's ONNX parser table" in out and "[unsupported-op] dft" in out
    assert main(["lint", str(tmp_path / "dft.onnx"), "--trt-version", "11"]) == 0
    assert main(["lint", str(tmp_path / "dft.onnx"), "--trt-version", "9"]) == 2


# --- the real step graphs of the embedded default model ---------------------------------


@pytest.mark.parametrize(
    "precision,rest,shift",
    [
        ("int8", "fp32", False),
        ("int8", "fp16", True),
        ("fp8", "fp32", True),
        ("fp8", "fp16", False),
    ],
)
def test_quantized_step_graphs_of_the_default_model_pass(
    default_export, default_calib, tmp_path, precision, rest, shift
):
    from sasq.engines.lint import config_for_export
    from sasq.exporter.manifest import verify
    from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
    from sasq.exporter.quantize import quantize

    cfg = QuantConfig(target="tensorrt", precision=precision, rest=rest,
                      shift_sum=ShiftSumConfig(enabled=shift))  # fmt: skip
    out = quantize(default_export, default_calib, cfg, tmp_path / "q")
    quant = verify(out).extra["quant"]
    for v in ("10", "11"):
        assert lint(out / "step.onnx", config_for_export(quant, trt_version=v)) == []


def test_fp16_step_graph_of_the_default_model_passes(default_export):
    from sasq.exporter.fp16_pass import to_fp16

    fp16, _ = to_fp16(onnx.load(str(default_export / "step.onnx")))
    for v in ("10", "11"):  # an FP graph: no GEMM is quantized, so only touched ones count
        assert lint(fp16, LintConfig(trt_version=v, coverage="touched")) == []
