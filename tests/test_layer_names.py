"""Model names of the step graph's quantizable ops, read off the export."""

from __future__ import annotations

import onnx

from sasq.calib.layer_names import layer_names
from sasq.quant.targets import quantizable_inputs


def test_every_quantizable_op_has_its_model_name(default_export):
    step = onnx.load(str(default_export / "step.onnx"), load_external_data=False)
    names = layer_names(step)
    assert list(names) == [t.node for t in quantizable_inputs(step)]
    per_block = ["attn.mat_qkv", "attn.qk", "attn.av", "attn.proj", "ffn.fc1", "ffn.fc2"]
    assert list(names.values()) == [
        *(f"blocks.{i}.{p}" for i in range(4) for p in per_block),
        "head",
    ]


def test_unnamed_ops_keep_their_node_name():
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "y"], ["z"], name="mm")],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])],
    )
    assert layer_names(helper.make_model(g)) == {"mm": "mm"}
