"""The configs of ``sasq bench`` and ``sasq profile``, light to import (the CLI builds its
flags from their fields without loading torch or ONNX Runtime)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sasq.engines.backends import GRAMMAR, KINDS, parse_spec
from sasq.errors import UserError
from sasq.tools.measure.steadiness import default_threads


@dataclass(frozen=True)
class BenchConfig:
    """backends: the first is the baseline of the ratios. threads: torch intra-op threads
    and ONNX Runtime intra_op_threads alike (0: each library's default, all cores; default
    ``default_threads()``). warmup: untimed generations per backend."""

    backends: tuple[str, ...] = ("torch", "ort")
    batch_sizes: tuple[int, ...] = (1, 8)
    repeats: int = 5
    warmup: int = 1
    seed: int = 0
    threads: int = field(default_factory=default_threads)
    io_binding: bool | None = None  # OrtBackend's default: on for GPU providers
    gemm_peak: bool = True  # also time plain int8 / fp32 MatMuls of the model's GEMM shapes
    roofline: bool = True  # each CPU row's scales against the machine's limit (roofline.py)
    int8_kernels: str = "auto"  # ONNX Runtime sessions' int8 kernel policy (ort_session)

    def __post_init__(self) -> None:
        from sasq.engines.int8_kernels import Int8Kernels

        try:
            Int8Kernels(self.int8_kernels)
        except ValueError as e:
            raise UserError(str(e)) from None
        if not self.backends:
            raise UserError(f"no backends; each is {GRAMMAR}")
        unknown = [b for b in self.backends if "=" not in b and b not in KINDS]
        if unknown:
            raise UserError(f"unknown backends {unknown}; each is {GRAMMAR}")
        for b in self.backends:  # the grammar now; a bare kind's folder once it is known
            if "=" in b:
                parse_spec(b)
        labels = [b.partition("=")[0] for b in self.backends]
        if len(set(labels)) != len(labels):
            raise UserError(f"backend labels must differ: {labels}")
        if self.repeats < 1 or self.warmup < 0 or self.threads < 0:
            raise UserError("bench needs repeats >= 1, warmup >= 0, threads >= 0")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError("batch sizes must be >= 1")


@dataclass(frozen=True)
class ProfileConfig:
    batch: int = 1  # images (2x rows with CFG)
    threads: int = 2
    seed: int = 0
    repeats: int = 5  # profiled generations; medians over them
    warmup: int = 1  # generations before them, not counted
    roofline: bool = False  # each scale against the machine's limit (roofline.py)

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.warmup < 0:
            raise UserError("profile needs --repeats >= 1 and --warmup >= 0")
