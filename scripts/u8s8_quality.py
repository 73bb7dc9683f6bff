"""What the ``ort`` target's bounded u8 x s8 form costs in quality (issue 27), on an embedded
model: W8A8 int8 (int8 KV cache, plain minmax calibration of 32 images) written in the
full 8-bit form and in the bounded form (7-bit weights, 7-bit queries, uint8
probabilities), plus the two halves of it, each against the FP model on the same labels
and seeds, with 95% paired bootstrap intervals of every row's difference from the first.
(The other way to bound a linear, 7-bit activations with 8-bit weights, was measured with
this script at commit 02a9719 and dropped: -0.057 token agreement on default.)
``--gps``: the same for PTQ4ARVG's pair (GPS export + static per-step scales), GPS
balanced for 8-bit weights and for the bounded form's 7-bit ones.

    python scripts/u8s8_quality.py default 50      # model, samples per class
    python scripts/u8s8_quality.py digits32 30 [--gps]

Metrics per sample: token agreement with FP (free running, mean over scales, as ``sasq
eval``) and the logits' SQNR against FP with the quantized run teacher-forced on the FP
tokens (signal and noise energies summed over the samples of a draw). Run it on a CPU
whose u8 x s8 kernel is exact (VNNI): ``full`` then shows 8-bit int8 itself, not
saturation. Prints a markdown table and writes JSON next to it (``--out``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sasq.calib.calibrate import CalibConfig, calibrate
from sasq.engines.backends import make_backend
from sasq.engines.decode import generate
from sasq.engines.int8_kernels import cpu_int8
from sasq.exporter import export_model
from sasq.exporter.qdq_config import QuantConfig
from sasq.exporter.quantize import quantize
from sasq.exporter.u8s8 import Forms, U8S8Form
from sasq.models import load_model
from sasq.tools.quality.intervals import draws, interval


@dataclass(frozen=True)
class _Ablation(QuantConfig):
    """A config whose u8 x s8 forms are set by hand (the halves of the bounded form)."""

    override: Forms | None = None

    @property
    def forms(self) -> Forms:
        return self.override or super().forms


# row -> (bits GPS balances the export's weights for, None: no GPS; the quantization)
ROWS = {
    "full": (None, QuantConfig(u8s8=U8S8Form.FULL)),
    "w7 only": (None, _Ablation(override=Forms(weight_qmax=64))),
    "q7 + uint8 P only": (None, _Ablation(override=Forms(query_u8=True, probs_u8=True))),
    "bounded": (None, QuantConfig(u8s8=U8S8Form.BOUNDED)),
}
# --gps: PTQ4ARVG's pair (gain-projected scaling + static per-step scales), as sasq eval's
# gps-stwq row; GPS balanced for 8-bit weights, and for the bounded form's 7-bit ones
GPS_ROWS = {
    "gps full": (8, QuantConfig(u8s8=U8S8Form.FULL, static_per_step=True)),
    "gps bounded": (8, QuantConfig(static_per_step=True)),
    "gps (balanced for 7-bit weights) bounded": (7, QuantConfig(static_per_step=True)),
}


def _export(model, tmp: Path, gps_w_bits: int | None, seed: int) -> Path:
    """The FP export, or one with GPS balanced for W{gps_w_bits}A8 (as sasq eval makes)."""
    out = tmp / f"fp-gps{gps_w_bits}"
    if gps_w_bits is None:
        export_model(model, out)
        return out
    from sasq.calib.gps import GPSConfig, apply_gps
    from sasq.exporter import ExportConfig

    gc = GPSConfig(num_samples=32, w_bits=gps_w_bits, a_bits=8, resample="none", seed=seed,
                   progress=False)  # fmt: skip
    gps_model, notes = apply_gps(model, gc)
    export_model(gps_model, out, ExportConfig(progress=False), notes={"gps": notes})
    return out


def _per_sample(model, backend, labels, seed, fp):
    """(agreement [N], signal energy [N], noise energy [N]) of one backend's chunk."""
    pns, K, s = model.var.patch_nums, model.var.num_classes, model.cfg.sampling
    free = generate(backend, labels, pns, s, seed, K)
    forced = generate(backend, labels, pns, s, seed, K, keep_logits=True,
                      hook=lambda si, idx, lg: fp.idx[si])  # fmt: skip
    n = len(labels)
    agree = torch.stack([(a.reshape(n, -1) == b.reshape(n, -1)).float().mean(1)
                         for a, b in zip(fp.idx, free.idx, strict=True)], 1).mean(1)  # fmt: skip
    sig, noise = np.zeros(n), np.zeros(n)
    for la, lb in zip(fp.logits, forced.logits, strict=True):
        a, b = la.double().numpy(), lb.double().numpy()
        e_s, e_n = (
            (a**2).reshape(2, n, -1).sum((0, 2)),
            ((a - b) ** 2).reshape(2, n, -1).sum((0, 2)),
        )
        sig += e_s
        noise += e_n
    return agree.numpy(), sig, noise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", default="default", nargs="?")
    ap.add_argument("per_class", type=int, default=50, nargs="?")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--gps", action="store_true", help="the GPS + per-step rows instead")
    args = ap.parse_args()
    rows = GPS_ROWS if args.gps else ROWS
    model = load_model(args.model)
    K = model.var.num_classes
    labels = torch.tensor([c for c in range(K) for _ in range(args.per_class)])
    with tempfile.TemporaryDirectory() as tmp:
        cc = CalibConfig(num_samples=32, resample="none", observer="minmax", seed=args.seed,
                         progress=False)  # fmt: skip
        exports = {}
        for gps_w in {g for g, _ in rows.values()}:
            fp_dir = _export(model, Path(tmp), gps_w, args.seed)
            exports[gps_w] = fp_dir, calibrate(fp_dir, cc).cache
        dirs = {r: quantize(*exports[g], qc, Path(tmp) / f"q{i}")
                for i, (r, (g, qc)) in enumerate(rows.items())}  # fmt: skip
        backends = {r: make_backend("ort", None, d) for r, d in dirs.items()}
        got = {r: ([], [], []) for r in rows}
        torch_fp = make_backend("torch", model)
        for i, chunk in enumerate(labels.split(args.batch)):
            fp = generate(torch_fp, chunk, model.var.patch_nums, model.cfg.sampling,
                          args.seed + i, K, keep_logits=True)  # fmt: skip
            for r, be in backends.items():
                for acc, part in zip(got[r], _per_sample(model, be, chunk, args.seed + i, fp),
                                     strict=True):  # fmt: skip
                    acc.append(part)
    halves = draws(len(labels), 1000, args.seed)  # half-samples (tools/quality/intervals.py)
    idx = halves.idx
    per = {r: [np.concatenate(p) for p in v] for r, v in got.items()}

    def stats(r):
        a, s, n = per[r]
        ta = (a.mean(), np.array([a[i].mean() for i in idx]))
        db = (10 * np.log10(s.sum() / n.sum()),
              np.array([10 * np.log10(s[i].sum() / n[i].sum()) for i in idx]))  # fmt: skip
        return {"token_agreement": ta, "logit_sqnr_db": db}

    st = {r: stats(r) for r in rows}
    base = next(iter(rows))
    result = {"model": args.model, "samples": len(labels), "cpu": cpu_int8().as_dict(),
              "rows": {}}  # fmt: skip
    lines = [f"{args.model}, {len(labels)} samples, CPU u8s8 kernel {cpu_int8().kernel}", "",
             f"| form | token agreement | vs {base} | logits SQNR dB | vs {base} |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        row, cells = {}, []
        for m in ("token_agreement", "logit_sqnr_db"):
            v, reps = st[r][m]
            dv, dreps = v - st[base][m][0], reps - st[base][m][1]
            iv = interval(v, halves.rate * (reps - v))
            d = interval(dv, halves.rate * (dreps - dv))
            row[m] = {"value": iv.as_dict(), "vs_first_row": d.as_dict() | {
                "significant": d.excludes(0.0)}}  # fmt: skip
            cells += [
                f"{v:.4f} [{iv.lo:.4f}, {iv.hi:.4f}]",
                "-" if r == base else f"{d.value:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]",
            ]
        result["rows"][r] = row
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
