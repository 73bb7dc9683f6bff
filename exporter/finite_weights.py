"""Every floating-point weight of an ONNX graph is finite, or the error names the tensor.

The Q/DQ writer derives per-channel int8 scales from the weights; one NaN there gives an
int8 graph of garbage (or a ValueError deep in the writer). An export's own hashes only say
its files are the ones its maker wrote, not that they are sane, so the step graph's weights
are checked once they are loaded for quantization.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sasq.errors import UserError

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
           onnx.TensorProto.BFLOAT16}  # fmt: skip


def check_initializers_finite(model: onnx.ModelProto, source: str | Path) -> None:
    """``UserError`` naming the first floating-point initializer with NaN or Inf."""
    for t in model.graph.initializer:
        if t.data_type not in _FLOATS:
            continue
        a = numpy_helper.to_array(t)
        if not np.all(np.isfinite(a.astype(np.float32, copy=False))):
            bad = int(np.size(a) - np.isfinite(a.astype(np.float32, copy=False)).sum())
            raise UserError(
                f"{source}: weight {t.name} has {bad} non-finite value(s) (NaN/Inf); "
                "export the model again from finite weights"
            )
