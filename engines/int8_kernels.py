"""Which int8 GEMM kernel ONNX Runtime's CPU EP runs on this CPU, and whether it is exact.

On x86-64, ONNX Runtime rewrites signed int8 activation Q/DQ pairs into uint8 ones (zero
point + 128, its ``QDQS8ToU8Transformer``) so that a quantized MatMul runs as uint8 A x
int8 B, the form its fast x86 kernels take (MLAS). Which u8 x s8 kernel MLAS picks depends
on the CPU (``onnxruntime/core/mlas/lib/platform.cpp``):

- AVX2 (``avx2``) and AVX-512 without VNNI (``avx512bw``): ``vpmaddubsw`` multiplies
  adjacent pairs of u8 x s8 bytes and adds each pair in *int16 with saturation*, then
  ``vpmaddwd`` widens to int32. 255 x 127 x 2 = 64770 > 32767: a pair can saturate;
- AVX-VNNI (``avx_vnni``), AVX-512 VNNI (``avx512_vnni``), AMX (``amx_int8``):
  ``vpdpbusd`` / tiles accumulate in int32: exact;
- x86 without AVX2 (SSE): widens both to int16 first (``pmaddwd``): exact;
- not x86 (ARM): no u8 rewrite at all (``QDQIsInt8Allowed``), s8 x s8 kernels: exact.

So a u8 x s8 product is exact on every CPU when every adjacent pair sum fits int16:
|a| <= 255 with |b| <= 64 (255 x 64 x 2 = 32640), or a <= 128 with any int8 b
(128 x 127 x 2 = 32512, 128 x -128 x 2 = -32768). ``pair_sum_fits`` is that test;
``maddubs_matmul`` emulates the saturating kernel in numpy, so tests can show on any
machine what a CPU without VNNI computes. The session option ``session.qdqisint8allowed=1``
keeps s8 x s8 (no rewrite): exact everywhere, about 4x slower on AVX2 (issue 27).

``int8_products`` (``int8_graph``) lists the products of a graph ORT runs as u8 x s8 and
whether each can saturate; ``ort_session`` uses both to pick the session's kernels.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

INT16_MIN, INT16_MAX = -32768, 32767
# The CPU flags (Linux /proc/cpuinfo names) that decide MLAS's u8 x s8 kernel.
INT8_FLAGS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
# Kernels whose u8 x s8 pair sums saturate in int16.
SATURATING = frozenset({"avx2", "avx512-core"})


class Int8Kernels(str, Enum):
    """Which int8 kernels an ONNX Runtime session runs (``SessionConfig.int8_kernels``).

    AUTO: ORT's default (u8 x s8 on x86) unless this CPU's u8 x s8 kernel saturates and
    the graph has a product that can saturate; then s8 x s8 (exact, slower).
    U8S8: always ORT's default. S8S8: always ``session.qdqisint8allowed=1``."""

    AUTO = "auto"
    U8S8 = "u8s8"
    S8S8 = "s8s8"


@dataclass(frozen=True)
class CpuInt8:
    """The int8 features of a CPU, as far as ONNX Runtime's kernel choice goes.

    machine: ``platform.machine()``; flags: those of ``INT8_FLAGS`` present; known: the
    flags could be read (Linux ``/proc/cpuinfo``). An x86 CPU whose flags are unknown is
    assumed to saturate: the cost of that guess is speed, never a wrong number."""

    machine: str
    flags: tuple[str, ...]
    known: bool = True

    @property
    def x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86")

    @property
    def kernel(self) -> str:
        """MLAS's u8 x s8 GEMM kernel, in the order platform.cpp overrides them."""
        if not self.x86:
            return "s8s8 (no u8 rewrite off x86)"
        if not self.known:
            return "unknown"
        f = set(self.flags)
        if "avx2" not in f:
            return "sse (int16 widening, exact)"
        kernel = "avx-vnni" if "avx_vnni" in f else "avx2"
        if "avx512bw" in f:
            kernel = "avx512-vnni" if "avx512_vnni" in f else "avx512-core"
        if {"amx_tile", "amx_int8"} <= f:
            kernel = "amx"
        return kernel

    @property
    def u8s8_saturates(self) -> bool:
        """ORT's u8 x s8 products can saturate here (full-range 8-bit operands)."""
        return self.x86 and (not self.known or self.kernel in SATURATING)

    def as_dict(self) -> dict:
        """For reports (bench.json, eval.json, compare.json, the demo report)."""
        return {
            "machine": self.machine,
            "int8_flags": list(self.flags) if self.known else None,
            "u8s8_kernel": self.kernel,
            "u8s8_saturates": self.u8s8_saturates,
        }


def parse_cpuinfo(text: str, machine: str) -> CpuInt8:
    """``CpuInt8`` from the text of /proc/cpuinfo (the first ``flags`` line)."""
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.partition(":")[2].split())
            return CpuInt8(machine, tuple(f for f in INT8_FLAGS if f in have))
    return CpuInt8(machine, (), known=False)


_CPU: CpuInt8 | None = None


def cpu_int8() -> CpuInt8:
    """This machine's int8 features (read once)."""
    global _CPU
    if _CPU is None:
        machine = platform.machine()
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
        _CPU = parse_cpuinfo(text, machine)
    return _CPU


def pair_sum_fits(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Every sum of two products a1*b1 + a2*b2 with a in [a0, a1] (raw u8, >= 0) and b in
    [b0, b1] (raw s8) fits int16: what makes ``vpmaddubsw`` exact."""
    a_hi = max(a[1], 0)
    return 2 * a_hi * max(b[1], 0) <= INT16_MAX and 2 * a_hi * min(b[0], 0) >= INT16_MIN


def maddubs_matmul(a_u8: np.ndarray, b_s8: np.ndarray) -> np.ndarray:
    """What MLAS's AVX2 u8 x s8 kernel computes for raw A [M, K] (uint8) and B [K, N]
    (int8): adjacent pairs along K multiplied and added in int16 with saturation
    (``vpmaddubsw``), then summed exactly in int32 (``vpmaddwd`` with ones, ``vpaddd``).
    K is padded with a zero to an even length, as MLAS pads its packed panels."""
    a = np.asarray(a_u8, np.int32)
    b = np.asarray(b_s8, np.int32)
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    pairs = a[:, 0::2, None] * b[None, 0::2, :] + a[:, 1::2, None] * b[None, 1::2, :]
    return np.clip(pairs, INT16_MIN, INT16_MAX).sum(axis=1, dtype=np.int64)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact integer product (what VNNI, AMX, s8 x s8 and ARM kernels compute)."""
    return np.asarray(a, np.int64) @ np.asarray(b, np.int64)
