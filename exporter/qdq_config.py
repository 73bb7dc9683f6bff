"""Configuration of the int8 Q/DQ writer (DESIGN.md "Quantization rules" and "Shift-and-sum
attention"): one frozen dataclass, so ``quantize()`` takes a config, not a dozen keywords."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from sasq.tools.errors import UserError

# The bit widths of the quality studies: name -> (weight bits, activation bits).
BIT_WIDTHS = {"W8A8": (8, 8), "W6A6": (6, 6), "W4A8": (4, 8)}


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
    easy to check against the math). layers: fnmatch globs of the AV MatMul node names
    that get copies (the budget is shared by those layers)."""

    enabled: bool = False
    mode: ShiftSumMode = ShiftSumMode.BUDGET
    budget: float = 0.01
    max_n: int = 8
    fuse: bool = True
    prob_shift: bool = True
    layers: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ShiftSumMode(self.mode))
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
    (``qdq_per_step``; not applied to V under shift-and-sum, whose shifts use V's scale)."""

    w_bits: int = 8
    a_bits: int = 8
    float_nodes: tuple[str, ...] = ()
    min_gemm_dim: int = 16
    shift_sum: ShiftSumConfig = field(default_factory=ShiftSumConfig)
    static_per_step: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "float_nodes", tuple(self.float_nodes))
        for what, bits in (("w_bits", self.w_bits), ("a_bits", self.a_bits)):
            if not 2 <= bits <= 8:
                raise UserError(f"{what} must be in [2, 8], got {bits}")

    @property
    def simulated(self) -> bool:
        """Narrower than int8: the graph simulates it (Clip between Q and DQ)."""
        return self.w_bits < 8 or self.a_bits < 8

    def to_dict(self) -> dict:
        """JSON-ready settings, recorded in the quantized export's manifest."""
        s = self.shift_sum
        return {
            "w_bits": self.w_bits,
            "a_bits": self.a_bits,
            "float_nodes": list(self.float_nodes),
            "min_gemm_dim": self.min_gemm_dim,
            "static_per_step": self.static_per_step,
            "shift_sum": {
                "enabled": s.enabled,
                "mode": s.mode.value,
                "budget": s.budget,
                "max_n": s.max_n,
                "fuse": s.fuse,
                "prob_shift": s.prob_shift,
                "layers": list(s.layers),
            },
        }
