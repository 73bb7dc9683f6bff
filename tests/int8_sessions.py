"""ONNX Runtime sessions whose int8 products are exact on every CPU, for tests that hold
int8 outputs to a tolerance (issue 27: a tolerance must come from the arithmetic, not from
one machine's kernels).

The int8 kernels are decided as on a CPU without VNNI (``u8s8_saturates=True``), whatever
CPU runs the test: a graph whose u8 x s8 operands are bounded keeps ORT's u8 x s8 kernels,
exact everywhere by the bound (``engines/int8_graph``); a graph with a product that can
saturate gets s8 x s8 (``session.qdqisint8allowed=1``), exact everywhere. Either way the
integer sums are exact, so the same numbers come out on AVX2, VNNI and ARM machines.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort

from sasq.engines.ort_session import SessionConfig, open_session

NO_VNNI = SessionConfig(u8s8_saturates=True)
# As make_backend("ort", threads=1) opens an export (int8 GEMMs need MatMulAddFusion off).
NO_VNNI_BACKEND = SessionConfig.for_int8(intra_op_threads=1, u8s8_saturates=True)


def exact_session(model: onnx.ModelProto | bytes | Path, bounded: bool | None = None):
    """A CPU session on ``model`` under ``NO_VNNI``; ``bounded``: assert that the graph's
    u8 x s8 products cannot (True) or can (False) saturate, i.e. which way it was exact."""
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    sess, choice = open_session(src, NO_VNNI)
    if bounded is not None:
        assert (choice.can_saturate == 0) is bounded, choice
    return sess


def run_exact(model: onnx.ModelProto, feeds: dict) -> dict:
    """Every output of ``model`` on ``feeds`` by name, through ``exact_session``."""
    sess: ort.InferenceSession = exact_session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))
