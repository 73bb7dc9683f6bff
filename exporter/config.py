"""How a model is exported: opset, batch axes, external-data threshold, checks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# ONNX protobufs cannot exceed 2 GiB; 1 GiB leaves room for the graph itself and for tools
# (checker, shape inference, Netron) that load a whole inline model into memory.
DEFAULT_EXTERNAL_DATA_THRESHOLD = 1 << 30


class StepDtype(str, Enum):
    """The float type of the step graph (the other graphs are small and stay fp32)."""

    FP32 = "fp32"
    FP16 = "fp16"  # written by exporter/fp16_pass.py: TensorRT 11 has no FP16 builder flag


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``export_model``.

    opset: 20, where GELU is one Gelu op: ONNX Runtime runs it 8x faster than opset 18's
        Tanh/Pow/Mul chain (2 x 256 x 4096, 2 threads: 0.84 against 6.8 ms, 16 per step at
        VAR-d16's last scale), and TensorRT 10 parses it. 18 is torch's native opset (no
        version conversion); it has LayerNormalization (17+) as well.
    dynamic_batch: batch axes symbolic (``B`` images, ``B2`` = 2B CFG rows in the step);
        otherwise every graph is fixed to ``batch_size`` images.
    external_data_threshold: a graph whose initializers total more bytes than this stores
        them in ``<graph>.onnx.data`` beside it (0 forces external data everywhere).
    optimize: run onnxscript's optimizer (constant folding, dead-code removal) per graph.
    check: run ``onnx.checker.check_model(full_check=True)`` on every written graph.
    more_smooth: also write ``next_soft_{si}.onnx``, the per-scale transition from codebook
        weights, which ``more_smooth`` sampling needs (small graphs: codebook, phi conv,
        resampling matrices and word_embed, no transformer weight).
    progress: a bar over the graphs on a terminal (``sasq.progress``); False inside a
        caller that shows its own.
    dtype: fp16 writes the step graph's float parts in fp16 (``fp16_pass``: x_BlC, mod_BMC
        and logits stay fp32 behind Casts, the K/V cache is fp16, reductions run in fp32).
    """

    opset: int = 20
    dynamic_batch: bool = True
    batch_size: int = 1
    external_data_threshold: int = DEFAULT_EXTERNAL_DATA_THRESHOLD
    optimize: bool = True
    check: bool = True
    more_smooth: bool = True
    progress: bool = True
    dtype: StepDtype = StepDtype.FP32

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", StepDtype(self.dtype))
        if self.opset < 18:
            raise ValueError("opset must be >= 18 (torch's dynamo ONNX exporter)")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.external_data_threshold < 0:
            raise ValueError("external_data_threshold must be >= 0")
