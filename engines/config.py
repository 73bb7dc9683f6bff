"""The configs of the engines' features (generation, zero-shot editing, the lint and its
TensorRT parser tables), light to import: the CLI builds its flags from their fields
without loading torch or onnx."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sasq.engines.trt_ops import SupportTable
    from sasq.models import SamplingConfig


@dataclass(frozen=True)
class GenerateConfig:
    classes: tuple[int, ...]  # one label per image
    seed: int = 0
    batch: int = 64  # chunk i of the labels is sampled with seed + i
    sampling: SamplingConfig | None = None  # None: the model's own defaults
    progress: bool = False  # a bar over the batches (on a terminal, ``sasq.progress``)


class EditTask(str, Enum):
    INPAINT = "inpaint"  # regenerate the masked (white) pixels
    OUTPAINT = "outpaint"  # the input centred (a full-size one shrunk first); regenerate the rest
    CLASS_EDIT = "class-edit"  # regenerate the masked pixels (default: all) under another class


class TokenRule(str, Enum):
    ANY = "any"  # a token is regenerated if any pixel of its cell is masked
    MOST = "most"  # ... if at least half of its cell is masked


@dataclass(frozen=True)
class EditConfig:
    task: EditTask
    cls: int | None = None  # condition; None: unconditional (inpaint/outpaint only)
    seed: int = 0
    n: int = 1  # samples per input image (one generator, so they differ)
    rule: TokenRule = TokenRule.ANY
    outpaint_scale: float = 0.5  # a full-canvas input to outpaint is first shrunk by this
    fill: float = -1.0  # canvas value around an outpainted input before encoding (black)
    reencode: bool = True  # outside tokens re-encoded after the edited coarse scales
    sampling: SamplingConfig | None = None  # None: the model's own defaults


class TrtVersion(str, Enum):
    """The TensorRT major version whose parser table the lint checks against."""

    V10 = "10"  # the 10.x table (10.15, the last 10.x operators.md)
    V11 = "11"  # the 11.x table (11.2)


class Target(str, Enum):
    """Whose rules: TensorRT's explicit quantization, or what ONNX Runtime's CPU EP needs
    to run a quantized MatMul as an int8 kernel (its DQ must feed the MatMul directly:
    ORT does not move Q/DQ across Transpose/Reshape the way TensorRT does)."""

    TENSORRT = "tensorrt"
    ORT = "ort"


class Coverage(str, Enum):
    """Which MatMul/Gemm nodes must be quantized. TOUCHED: only those that already have a DQ
    input (they need DQ on both). ALL: every one not tiny and not listed in ``float_nodes``."""

    TOUCHED = "touched"
    ALL = "all"


@dataclass(frozen=True)
class LintConfig:
    """min_opset: 13 is the floor for per-axis Q/DQ; RECOMMENDED_OPSET (17) for LayerNorm.
    trt_version: whose ONNX parser table (``trt_ops``, ops and per-op dtypes) the graph is
    checked against, with the tensorrt target; the ort target's graphs are not for TensorRT.
    extra_ops: more accepted ops, "Op" (default domain) or "domain::Op" (e.g. a plugin).
    float_nodes: fnmatch globs of MatMul/Gemm names allowed to stay float (e.g. the FC after
    GELU); min_gemm_dim: GEMMs with K or N below it (or a GEMV) may stay float (int8
    gains nothing there).
    target: TensorRT's rules, or ONNX Runtime's (the same plus ``ort-dq-adjacent``).
    int8_cache: the KV cache (``past_*`` inputs, ``present_*`` outputs) must be int8."""

    min_opset: int = 13
    trt_version: TrtVersion = TrtVersion.V10
    extra_ops: frozenset[str] = frozenset()
    coverage: Coverage = Coverage.ALL
    float_nodes: tuple[str, ...] = ()
    min_gemm_dim: int = 16
    weights_per_channel: bool = True
    allow_int4_weights: bool = False
    softmax_scale: float = 1.0 / 127.0
    softmax_rtol: float = 1e-6
    target: Target = Target.TENSORRT
    int8_cache: bool = False  # the graph's KV cache inputs/outputs must be quantized
    # The 8-bit type of every Q/DQ and of the cache: signed int8, or FLOAT8E4M3FN (an fp8
    # export, whose softmax scale is then 1/448)
    quant_dtype: int = 3  # onnx.TensorProto.INT8 (onnx stays unloaded until a graph is read)

    def __post_init__(self) -> None:
        v = self.trt_version
        object.__setattr__(self, "trt_version", TrtVersion(v if isinstance(v, str) else str(v)))

    @property
    def support(self) -> SupportTable:
        from sasq.engines.trt_ops import support_table

        return support_table(self.trt_version)
