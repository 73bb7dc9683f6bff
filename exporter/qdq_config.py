"""Configuration of the int8 Q/DQ writer (README "A tour of the CLI", ``quantize``, and
"The int8 KV cache"; the shift-and-sum math: ``shift_sum.py``): one frozen dataclass, so
``quantize()`` takes a config, not a dozen keywords."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from sasq.errors import UserError
from sasq.exporter.u8s8 import Forms, U8S8Form, forms_for, record

# The bit widths of the quality studies: name -> (weight bits, activation bits).
BIT_WIDTHS = {"W8A8": (8, 8), "W6A6": (6, 6), "W4A8": (4, 8), "W4A6": (4, 6)}


class Target(str, Enum):
    """The runtime a quantized step graph is written for (README, "The int8 KV cache", "The
    runtime target"): both share the calibration, the int8 KV cache and the int8 weights;
    they differ in the form of the ops around them, each checked by its own lint rules."""

    ORT = "ort"  # ONNX Runtime's CPU kernels: shift-and-sum as two int8 products added
    TENSORRT = "tensorrt"  # TensorRT explicit quantization: shift-and-sum fused, one GEMM


class Precision(str, Enum):
    """The 8-bit format of the quantized tensors (weights, activations, KV cache)."""

    INT8 = "int8"
    # E4M3 (FLOAT8E4M3FN) Q/DQ for Hopper/Ada TensorRT (exporter/fp8.py): the int8 graph's
    # form with fp8 types and scales amax/448; ONNX Runtime's CPU kernels run it as reference
    FP8 = "fp8"


class RestDtype(str, Enum):
    """The float type of everything not quantized (exporter/fp16_pass.py for fp16)."""

    FP32 = "fp32"
    FP16 = "fp16"


class KvCache(str, Enum):
    INT8 = "int8"  # K and V quantized once, when appended; int8 between steps
    FP32 = "fp32"  # the float cache, re-quantized at every step (the earlier graph)


class ShiftSumMode(str, Enum):
    BUDGET = "budget"  # n in {1, 2, 4, .., max_n} per key token, extra work within a budget
    ALL2 = "all2"  # every key token gets n = 2 (the simplest setting, an ablation)


@dataclass(frozen=True)
class ShiftSumConfig:
    """enabled: expand the AV product of every attention block into shifted int8 copies.
    budget: extra AV work allowed, as a fraction of the step's MatMul work per query token
    (see ``shift_sum.extra_keys_per_layer``). max_n: most copies of one key token (a power
    of 2). prob_shift: also shift the copies' probabilities p/n by (2c+1-n)/(2n) steps of
    the probabilities' scale before their Q, so the copies' int8 probabilities sum to
    exactly round(127 p) (Hermite's identity) instead of n * round(127 p / n), which loses
    the resolution of exactly the high-attention tokens. fuse: write the fused form (one AV
    MatMul per layer over S + extra keys) instead of the expanded branches (``--no-fuse``,
    easy to check against the math; with the int8 KV cache, fusing is the TensorRT
    target's form). layers: fnmatch globs of the AV MatMul node names that get copies (the
    budget is shared by those layers). cache_budget: with the int8 KV cache, the copies are
    stored in the cache, so they also cost memory: at most this fraction of the cache's
    rows (None: ``budget``). Its default, 5%, is what lets a small model have copies at
    all (1% of a 30-token cache is no row); the int8 cache is 4x smaller than fp32 anyway."""

    enabled: bool = False
    mode: ShiftSumMode = ShiftSumMode.BUDGET
    budget: float = 0.01
    max_n: int = 8
    fuse: bool = True
    prob_shift: bool = True
    layers: tuple[str, ...] = ("*",)
    cache_budget: float | None = 0.05

    @property
    def cache_fraction(self) -> float:
        """Most value-cache rows the copies may add, as a fraction of the int8 KV cache's
        rows (K and V); None: the same fraction as the work ``budget``."""
        return self.budget if self.cache_budget is None else self.cache_budget

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ShiftSumMode(self.mode))
        if self.cache_budget is not None and not 0.0 <= self.cache_budget <= 1.0:
            raise UserError(f"shift-sum cache budget must be in [0, 1], got {self.cache_budget}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.max_n < 1 or self.max_n & (self.max_n - 1):
            raise UserError(f"shift-sum max_n must be a power of 2, got {self.max_n}")
        if not 0.0 <= self.budget <= 1.0:
            raise UserError(f"shift-sum budget must be in [0, 1], got {self.budget}")


@dataclass(frozen=True)
class QuantConfig:
    """w_bits / a_bits: 8 is real int8; 2..7 are simulated (int8 storage, weights scaled to
    the narrower grid, activations clipped between Q and DQ; such graphs are for quality
    studies, not TensorRT). float_nodes: fnmatch globs over MatMul/Gemm node names *and*
    weight names kept float (e.g. ``"*ffn.fc2*"``, LiteVAR's FC after GELU).
    min_gemm_dim: GEMMs with K or N below it stay float, as do GEMVs (an activation with
    no token axis, e.g. a linear on a per-image vector). static_per_step: PTQ4ARVG's static
    token-wise scales, one per scale step, as a row scaling around a fixed-scale Q/DQ
    (``qdq_per_step``; linears only under the int8 KV cache, whose tokens keep the scale
    they were stored with; not applied to V under shift-and-sum, whose shifts use V's
    scale). target: the runtime the graph is for. kv_cache: int8 (default) stores K and V
    as int8 between steps (``kv_cache.py``); fp32 is the earlier float cache re-quantized
    at every step. kv_bits: bits of the int8 cache (simulated below 8; None: a_bits).
    attention_qdq: with the int8 cache, also quantize the queries and the probabilities so
    both attention products are int8 GEMMs (the deployable form); False leaves them float
    over the dequantized cache, for studying the cache's own error (not TensorRT-legal).
    precision: int8, or fp8 (E4M3, the tensorrt target's form, ``exporter/fp8.py``). rest:
    fp16 writes everything not quantized in fp16 (``exporter/fp16_pass.py``), for TensorRT
    11's strongly typed int8 + fp16 engine.
    u8s8: the ``ort`` target's operand forms for ONNX Runtime's u8 x s8 kernels (``u8s8.py``):
    bounded (7-bit weights and queries, uint8 probabilities: exact on every CPU) or full
    (8 bits, the tensorrt numbers: exact where the CPU has VNNI); the tensorrt target
    ignores it (signed int8, full range, as TensorRT's rules want)."""

    w_bits: int = 8
    a_bits: int = 8
    float_nodes: tuple[str, ...] = ()
    min_gemm_dim: int = 16
    shift_sum: ShiftSumConfig = field(default_factory=ShiftSumConfig)
    static_per_step: bool = False
    target: Target = Target.ORT
    kv_cache: KvCache = KvCache.INT8
    kv_bits: int | None = None
    attention_qdq: bool = True
    precision: Precision = Precision.INT8
    rest: RestDtype = RestDtype.FP32
    u8s8: U8S8Form = U8S8Form.BOUNDED

    def __post_init__(self) -> None:
        object.__setattr__(self, "float_nodes", tuple(self.float_nodes))
        try:
            object.__setattr__(self, "target", Target(self.target))
            object.__setattr__(self, "kv_cache", KvCache(self.kv_cache))
            object.__setattr__(self, "precision", Precision(self.precision))
            object.__setattr__(self, "rest", RestDtype(self.rest))
            object.__setattr__(self, "u8s8", U8S8Form(self.u8s8))
        except ValueError as e:
            raise UserError(str(e)) from None
        self._check_fp8()
        for what, bits in (("w_bits", self.w_bits), ("a_bits", self.a_bits),
                           ("kv_bits", self.cache_bits)):  # fmt: skip
            if not 2 <= bits <= 8:
                raise UserError(f"{what} must be in [2, 8], got {bits}")

    def _check_fp8(self) -> None:
        """FP8 is the tensorrt target's int8 graph with E4M3 types: 8 bits everywhere, the
        8-bit cache stored in the graph (not re-quantized), one scale per tensor."""
        if self.precision != Precision.FP8:
            return
        if self.target != Target.TENSORRT:
            raise UserError("`precision` fp8 is a TensorRT (Hopper/Ada) format: use `target` "
                            "tensorrt (ONNX Runtime runs it as the reference)",
                            param="target")  # fmt: skip
        if self.simulated or self.kv_cache != KvCache.INT8 or self.static_per_step:
            raise UserError("`precision` fp8 needs 8-bit weights, activations and cache "
                            "(w_bits = a_bits = 8), the 8-bit KV cache and no "
                            "`static_per_step`", param="precision")  # fmt: skip

    @property
    def cache_bits(self) -> int:
        """Bits of the KV cache (simulated below 8): ``kv_bits``, else the activations'."""
        return self.a_bits if self.kv_bits is None else self.kv_bits

    @property
    def fused(self) -> bool:
        """Write shift-and-sum fused: TensorRT's one GEMM; on ORT's CPU kernels the
        concatenation costs more than the second small product (measured), unless the
        fp32-cache graph asks for it explicitly."""
        s = self.shift_sum
        if self.kv_cache == KvCache.FP32:
            return s.enabled and s.fuse
        return s.enabled and s.fuse and self.target == Target.TENSORRT

    @property
    def int8_transpose(self) -> bool:
        """Transpose the new keys as int8 before the cache (``kv_cache.int8_kv_cache``):
        ONNX Runtime runs it; TensorRT's ONNX parser lists no INT8 Transpose."""
        return self.target == Target.ORT and self.precision == Precision.INT8

    @property
    def forms(self) -> Forms:
        """How the operands of ORT's u8 x s8 kernels are written (``u8s8.forms_for``)."""
        return forms_for(self.target == Target.ORT, self.u8s8, self.w_bits, self.a_bits)

    @property
    def simulated(self) -> bool:
        """Narrower than int8: the graph simulates it (Clip between Q and DQ)."""
        return self.w_bits < 8 or self.a_bits < 8 or self.cache_bits < 8

    def to_dict(self) -> dict:
        """JSON-ready settings, recorded in the quantized export's manifest."""
        s = self.shift_sum
        return {
            "w_bits": self.w_bits,
            "a_bits": self.a_bits,
            "float_nodes": list(self.float_nodes),
            "min_gemm_dim": self.min_gemm_dim,
            "static_per_step": self.static_per_step,
            "target": self.target.value,
            "kv_cache": self.kv_cache.value,
            "kv_bits": self.cache_bits,
            "attention_qdq": self.attention_qdq,
            "precision": self.precision.value,
            "rest": self.rest.value,
            "u8s8": record(self.u8s8, self.forms) if self.target == Target.ORT else None,
            "shift_sum": {
                "enabled": s.enabled,
                "mode": s.mode.value,
                "budget": s.budget,
                "max_n": s.max_n,
                "fuse": s.fuse,
                "prob_shift": s.prob_shift,
                "layers": list(s.layers),
                "cache_budget": s.cache_fraction,
            },
        }
