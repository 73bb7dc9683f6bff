"""Memory estimates (``sasq.models.memory``) against the peak resident memory measured.

Each measurement runs in a fresh process (``tests/memory_probe.py``): the kernel's peak-RSS
mark is reset just before the operation and read after it, so the test's own memory and
the imports do not count. An estimate counts the large buffers alive at the operation's
peak, so it must come within 25% of that peak (the issue's bound) on every config:
per-block AdaLN, shared AdaLN (one AdaLN linear, not one per block: the d36 refusal), and a
long sequence (680 tokens, where the mask, the attention scores and the KV cache dominate).
The configs are small enough to run in seconds (export and calibration: minutes, marked
slow), large enough (75-1100 MB) that the estimated buffers, not the interpreter's small
objects, make the peak.

The process runs with glibc's mmap threshold fixed at its starting value (128 KiB,
``MALLOC_MMAP_THRESHOLD_``), so a freed buffer leaves resident memory as it leaves the
program. By default glibc raises the threshold as large blocks are freed (up to 32 MiB)
and then keeps freed blocks below it in its heap: on these small models that added 0-27%
to the peak (measured: 312-332 MB instead of 261 MB for the shared-AdaLN generation),
depending on the order of frees, not on the model's buffers, which is what an estimate
can count. ``require_fits`` compares against the kernel's MemAvailable, which counts
those retained blocks as used; they are reused by the next allocations of their size.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sasq.models import memory as M
from sasq.models.config import ModelConfig, SamplingConfig, VARConfig, VQVAEConfig, official

PROBE = Path(__file__).with_name("memory_probe.py")
TOLERANCE = 0.25
P4, P7 = (1, 2, 3, 4), (1, 2, 3, 4, 5, 6, 8)
P10 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def _vqvae(pn: tuple[int, ...], vocab: int) -> VQVAEConfig:
    """The embedded default's small VQVAE (it decodes in milliseconds) at other scales."""
    return VQVAEConfig(vocab_size=vocab, ch=24, ch_mult=(1, 2, 2), num_res_blocks=1,
                       in_channels=1, using_sa=False, patch_nums=pn)  # fmt: skip


CONFIGS = {
    "per-block AdaLN": ModelConfig(
        _vqvae(P7, 4096), VARConfig(depth=6, embed_dim=384, num_heads=6, num_classes=10,
                                    patch_nums=P7)),  # fmt: skip
    "shared AdaLN": ModelConfig(
        _vqvae(P4, 512), VARConfig(depth=8, embed_dim=512, num_heads=8, num_classes=10,
                                   patch_nums=P4, shared_aln=True)),  # fmt: skip
    "680 tokens, top-k/top-p": ModelConfig(
        _vqvae(P10, 1024), VARConfig(depth=4, embed_dim=512, num_heads=8, num_classes=10,
                                     patch_nums=P10), SamplingConfig(top_k=100, top_p=0.9)),
}  # fmt: skip
BATCH = {"per-block AdaLN": 16, "shared AdaLN": 64, "680 tokens, top-k/top-p": 16}
CALIB_BATCH = {"per-block AdaLN": 8, "shared AdaLN": 8, "680 tokens, top-k/top-p": 4}


def _start(op: str, cfg: ModelConfig, batch: int = 1) -> subprocess.Popen:
    cfg_json = json.dumps(dataclasses.asdict(cfg))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(128 << 10))
    return subprocess.Popen(
        [sys.executable, str(PROBE), op, cfg_json, str(batch)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def _measure(op: str, cfg: ModelConfig, batch: int = 1) -> dict:
    return _result(_start(op, cfg, batch))


def _assert_close(m: dict) -> None:
    ratio = m["est"] / m["peak"]
    parts = ", ".join(f"{n} {b / 1e6:.1f}" for n, b in m["parts"])
    why = f"estimate {m['est'] / 1e6:.1f} MB ({parts}) vs peak {m['peak'] / 1e6:.1f} MB"
    print(f"{why}: ratio {ratio:.3f}")  # shown with -s: the numbers behind the verdict
    assert abs(ratio - 1) <= TOLERANCE, why


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures RSS through Linux /proc"
)


@needs_proc
@pytest.mark.parametrize("name", list(CONFIGS))
def test_build_estimate_matches_the_measured_peak(name):
    _assert_close(_measure("build", CONFIGS[name]))


@needs_proc
@pytest.mark.parametrize("name", list(CONFIGS))
def test_generation_estimate_matches_the_measured_peak(name):
    _assert_close(_measure("generate", CONFIGS[name], BATCH[name]))


_PROBES: dict[str, subprocess.Popen] = {}
_EXPORTED: dict[str, dict] = {}


def _export_and_calibrate(name: str) -> dict:
    """Both measurements of a config from one process: its export is the calibration's.
    The first call starts every config's probe at once: each is single-threaded and
    measures its own process's peak, so they can share the cores (CI time)."""
    if not _PROBES:
        for n, cfg in CONFIGS.items():
            _PROBES[n] = _start("export+calibrate", cfg, CALIB_BATCH[n])
    if name not in _EXPORTED:
        _EXPORTED[name] = _result(_PROBES[name])
    return _EXPORTED[name]


@needs_proc
@pytest.mark.slow  # an export and two calibrations per config: minutes on 2 busy cores
@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_estimate_matches_the_measured_peak(name):
    _assert_close(_export_and_calibrate(name)["export"])


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_calibration_estimate_matches_the_measured_peak(name):
    _assert_close(_export_and_calibrate(name)["calibrate"])


def test_shared_adaln_counts_one_linear_and_the_meta_device_costs_nothing(monkeypatch):
    """VAR-d36 (shared AdaLN) has 2.35 B parameters: 9.4 GB in float32, not the 28.5 GB a
    per-block AdaLN twice over gave, which refused ``build(official(36))`` on a 24 GB
    machine. On the meta device (``load_model`` builds there, then adopts the checkpoint's
    tensors) nothing is allocated, so nothing is refused."""
    import torch

    from sasq.models import build

    cfg = official(36)
    assert M.var_params(cfg) == 2_353_893_904  # the official var_d36.pth's parameter count
    est = M.build_estimate(cfg)
    assert 9.8e9 < est.total < 10.0e9  # (2.354 B + 0.109 B VQVAE) x 4 bytes + the mask
    monkeypatch.setattr(M, "available_bytes", lambda: 24 * 10**9)
    M.require_fits(est, "building VAR-d36", "")  # fits on 24 GB
    with torch.device("meta"):
        assert M.build_estimate(cfg).total == 0
        m = build(cfg)  # not refused, nothing allocated
    assert next(m.var.parameters()).device.type == "meta"
    monkeypatch.setattr(M, "available_bytes", lambda: 1)  # even with nothing free
    with torch.device("meta"):
        build(cfg)


def test_a_model_too_large_to_build_is_refused_before_allocating(monkeypatch):
    """A config whose last scale is 300 x 300 tokens: its L x L attention mask is
    90,014^2 x 4 bytes, 32.4 GB, made from an 8.1 GB boolean comparison: refused by the
    estimate (40.8 GB) before anything is allocated."""
    from sasq.errors import UserError
    from sasq.models import build

    cfg = CONFIGS["shared AdaLN"]
    pn = (1, 2, 3, 300)
    big = ModelConfig(
        dataclasses.replace(cfg.vqvae, patch_nums=pn), dataclasses.replace(cfg.var, patch_nums=pn)
    )
    L = 1 + 4 + 9 + 300 * 300
    assert M.build_estimate(big).total > 4 * L * L
    monkeypatch.setattr(M, "available_bytes", lambda: 24 * 10**9)
    with pytest.raises(UserError, match=r"needs about 40\.8 GB of memory \(buffers 32\.4"):
        build(big)
