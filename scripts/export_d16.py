"""Export a randomly initialised VAR-d16 (~310M parameters) and check it against torch.

Not run in CI (minutes of CPU, ~6 GB of memory): a manual check that the exporter scales
to the official size. It builds VAR-d16 with the official patch_nums, exports it (the step
graph is ~1.2 GB, so it goes to external data at the default 1 GiB threshold), compares ONNX
Runtime with torch on one or two samples (tokens, logits per scale, image), and times
per-scale step latency and images/s of both with ``sasq.tools.measure.bench``.

    .venv/bin/python scripts/export_d16.py --out out/d16 --threads 2

``--vqvae small`` (the default) keeps the official patch_nums, z_channels=32 and 256 px
output but uses a narrow decoder (ch=32, one res-block per level, no attention), since the
official 109M-parameter decoder takes most of a generation's time on a small CPU and is not
what this checks; ``--vqvae official`` uses the real size.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import sasq.models as M
from sasq.engines.decode import generate
from sasq.engines.ort_backend import OrtBackend
from sasq.engines.ort_session import SessionConfig
from sasq.engines.torch_backend import TorchBackend
from sasq.exporter import ExportConfig, export_model
from sasq.models.config import official
from sasq.tools.measure.bench import run_bench, write_report
from sasq.tools.measure.config import BenchConfig


def build(vqvae: str) -> M.LoadedModel:
    cfg = official(16)
    if vqvae == "small":
        small = replace(cfg.vqvae, ch=32, num_res_blocks=1, using_sa=False)
        cfg = replace(cfg, vqvae=small)
    torch.manual_seed(0)
    m = M.build(cfg)
    # Random init has near-zero residual gates; widen them so attention actually matters.
    with torch.no_grad():
        for b in m.var.blocks:
            b.ada_lin[-1].weight.normal_(0, 0.02)
            b.ada_lin[-1].bias.normal_(0, 0.5)
        m.var.head.weight.normal_(0, 0.05)
    return m


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/d16")
    ap.add_argument("--vqvae", choices=("small", "official"), default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-export", action="store_true", help="reuse an export at --out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    torch.set_num_threads(args.threads)

    m = build(args.vqvae)
    n_var = sum(p.numel() for p in m.var.parameters())
    n_vae = sum(p.numel() for p in m.vqvae.parameters())
    print(f"VAR-d16 {n_var / 1e6:.1f}M params, VQVAE ({args.vqvae}) {n_vae / 1e6:.1f}M params")

    onnx_dir = out / "onnx"
    if not args.skip_export:
        t0 = time.perf_counter()
        man = export_model(m, onnx_dir, ExportConfig())
        print(f"export: {time.perf_counter() - t0:.1f} s, peak RSS {_rss_gb():.1f} GB")
    else:
        from sasq.exporter import load_manifest

        man = load_manifest(onnx_dir)
    for name, g in man.graphs.items():
        files = [g.file] + ([g.external_data] if g.external_data else [])
        size = sum(man.files[f].bytes for f in files)
        print(f"  {name:8s} {size / 2**20:9.1f} MiB  external data: {g.external_data}")

    labels = torch.arange(args.samples) % m.var.num_classes
    sess = SessionConfig(intra_op_threads=args.threads)

    def gen(backend):
        t0 = time.perf_counter()
        g = generate(
            backend,
            labels,
            m.var.patch_nums,
            m.cfg.sampling,
            0,
            m.var.num_classes,
            keep_logits=True,
        )
        return g, time.perf_counter() - t0

    ref, t_torch = gen(TorchBackend(m))
    got, t_ort = gen(OrtBackend(onnx_dir, sess))
    pairs = list(zip(ref.idx, got.idx, strict=True))
    agreement = {
        "tokens_equal_per_scale": [torch.equal(a, b) for a, b in pairs],
        "logits_max_abs_per_scale": [
            (a - b).abs().max().item() for a, b in zip(ref.logits, got.logits, strict=True)
        ],
        "logits_max_abs_value": max(lg.abs().max().item() for lg in ref.logits),
        "image_max_abs": (ref.img - got.img).abs().max().item(),
        "first_generation_s": {"torch": t_torch, "ort": t_ort},
    }
    print(json.dumps(agreement, indent=2))

    res = run_bench(
        m,
        onnx_dir,
        BenchConfig(batch_sizes=(1,), repeats=args.repeats, warmup=1, threads=args.threads),
    )
    res["agreement"] = agreement
    res["peak_rss_gb"] = _rss_gb()
    _, md, _ = write_report(res, out)
    print(md.read_text())
    print(f"peak RSS {_rss_gb():.1f} GB")
    ok = all(agreement["tokens_equal_per_scale"]) and agreement["image_max_abs"] <= 1e-3
    print("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
