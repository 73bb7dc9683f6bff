"""engines/int8_kernels.py: the CPU's int8 features name MLAS's u8 x s8 kernel (cpuinfo
texts of real CPU families, since this machine is only one of them), the numpy emulation of
the AVX2 kernel saturates full 8-bit operands and not bounded ones (exhaustively at the
bound), and ONNX Runtime on this CPU computes what the emulation of this CPU's kernel
says: exact arithmetic here on VNNI, the saturated sums on AVX2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from sasq.engines.int8_kernels import (
    cpu_int8,
    exact_matmul,
    maddubs_matmul,
    pair_sum_fits,
    parse_cpuinfo,
)

BASE = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 popcnt"
CPUS = {  # family: (flags beyond BASE, machine, MLAS kernel, saturates)
    "Zen 2/3, Haswell..Coffee Lake": ("avx avx2 fma", "x86_64", "avx2", True),
    "Skylake-SP (AVX-512, no VNNI)": ("avx2 avx512f avx512bw avx512dq avx512vl", "x86_64",
                                      "avx512-core", True),
    "Zen 4, Cascade Lake": ("avx2 avx512f avx512bw avx512_vnni", "x86_64", "avx512-vnni", False),
    "Alder Lake (AVX-VNNI)": ("avx2 avx_vnni", "x86_64", "avx-vnni", False),
    "Sapphire Rapids": ("avx2 avx512bw avx512_vnni amx_tile amx_int8", "x86_64", "amx", False),
    "pre-AVX2 x86": ("avx", "x86_64", "sse (int16 widening, exact)", False),
    "ARM": ("asimd asimddp", "aarch64", "s8s8 (no u8 rewrite off x86)", False),
}  # fmt: skip


@pytest.mark.parametrize("family", list(CPUS))
def test_cpu_families_name_their_kernel(family):
    extra, machine, kernel, saturates = CPUS[family]
    cpu = parse_cpuinfo(f"processor\t: 0\nflags\t\t: {BASE} {extra}\n", machine)
    assert cpu.kernel == kernel
    assert cpu.u8s8_saturates is saturates
    assert cpu.as_dict()["u8s8_saturates"] is saturates


def test_unknown_x86_flags_are_assumed_to_saturate():
    """Guessing "saturates" costs speed (s8 x s8); guessing "exact" could cost numbers."""
    assert parse_cpuinfo("", "x86_64").u8s8_saturates
    assert not parse_cpuinfo("", "aarch64").u8s8_saturates


def test_this_cpu_is_read():
    cpu = cpu_int8()
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split()
    assert cpu.known == bool(flags)
    assert set(cpu.flags) <= set(flags)
    assert cpu.u8s8_saturates == (cpu.kernel in ("avx2", "avx512-core"))


def test_full_8bit_operands_saturate_and_bounded_ones_do_not():
    """The emulated AVX2 kernel against exact arithmetic: u8 x s8 at full range differs
    (the issue's ~10% on random data), while |b| <= 64, or a <= 128, is bit-exact."""
    rng = np.random.default_rng(0)
    M, K, N = 32, 256, 48
    a = rng.integers(0, 256, (M, K)).astype(np.uint8)
    b8 = rng.integers(-127, 128, (K, N)).astype(np.int8)
    exact = exact_matmul(a, b8)
    rel = np.abs(maddubs_matmul(a, b8) - exact).max() / np.abs(exact).max()
    assert rel > 0.01, rel
    b7 = rng.integers(-64, 65, (K, N)).astype(np.int8)
    assert np.array_equal(maddubs_matmul(a, b7), exact_matmul(a, b7))
    a7 = rng.integers(0, 129, (M, K)).astype(np.uint8)
    b_full = rng.integers(-128, 128, (K, N)).astype(np.int8)
    assert np.array_equal(maddubs_matmul(a7, b_full), exact_matmul(a7, b_full))
    odd_a = rng.integers(0, 256, (M, K + 1)).astype(np.uint8)  # K padded with a zero
    odd_b = rng.integers(-64, 65, (K + 1, N)).astype(np.int8)
    assert np.array_equal(maddubs_matmul(odd_a, odd_b), exact_matmul(odd_a, odd_b))


@pytest.mark.parametrize("a_max", [127, 128, 129, 255])
def test_pair_sum_fits_is_exactly_the_emulation(a_max):
    """Every b bound against the worst pair (a, a) x (b, b): the test says 'fits' exactly
    when the emulated kernel is exact on it."""
    for b_lo, b_hi in [(-128, 127), (-64, 64), (-65, 65), (-64, 63), (0, 127), (-128, 0)]:
        a = np.full((1, 2), a_max, np.uint8)
        worst = [np.full((2, 1), v, np.int8) for v in (b_lo, b_hi)]
        exact = all(np.array_equal(maddubs_matmul(a, w), exact_matmul(a, w)) for w in worst)
        assert pair_sum_fits((0, a_max), (b_lo, b_hi)) == exact, (a_max, b_lo, b_hi)


def _matmul_integer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "mmi",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, list(a.shape)),
         helper.make_tensor_value_info("B", TensorProto.INT8, list(b.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, None)],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"A": a, "B": b})[0]


def test_onnx_runtime_computes_what_this_cpus_kernel_is_said_to():
    """ORT's u8 x s8 MatMulInteger equals, bit for bit, the emulation of the kernel this
    CPU's flags name: exact arithmetic on VNNI / AMX / ARM, the saturated pair sums on
    AVX2 (so the emulation the other tests lean on is checked wherever they run). A bounded
    B is exact on every CPU."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (8, 64)).astype(np.uint8)
    a[0] = 255  # a row that saturates for sure on AVX2
    b = rng.integers(-127, 128, (64, 16)).astype(np.int8)
    b[:, 0] = 127
    want = maddubs_matmul(a, b) if cpu_int8().u8s8_saturates else exact_matmul(a, b)
    assert np.array_equal(_matmul_integer(a, b), want)
    b7 = (b // 2).astype(np.int8)  # within [-64, 63]
    assert np.array_equal(_matmul_integer(a, b7), exact_matmul(a, b7))
