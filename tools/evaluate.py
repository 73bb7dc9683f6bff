"""``sasq eval``: the shift-and-sum paper's table on the embedded model.

Rows are quantizers, columns bit widths; every cell generates the same labels with the same
seed as the FP model and scores the images on the digits classifier's features: IS, FID to
held-out real digits, FID2FP (to the FP images of the same seeds: what quantization changed),
class accuracy, and token agreement with FP (mean over scales). FP against FP with another
seed is the noise floor of FID2FP and token agreement.

Rows: the ONNX Runtime peer (``quantize_static``, MinMax and Entropy on every MatMul, MinMax
on the linears only; int8 only), sasq's static Q/DQ graph with its int8 KV cache plain
(minmax), with the earlier float cache, with a 6- or 4-bit cache (+ shift-and-sum), +
codebook resampling, + shift-and-sum, + both, and the
PTQ4ARVG's pair (gain-projected scaling balanced for the cell's bits, exported, then
static per-step activation scales; otherwise as plain), and the paper-faithful PyTorch
fake-quant reference (dynamic per-token activations, log2 softmax,
per-head V, dynamic shift-and-sum), which shows what static TensorRT-legal deployment costs.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sasq.exporter.qdq_config import BIT_WIDTHS
from sasq.models import LoadedModel
from sasq.tools import atomic
from sasq.tools.classifier import DigitsClassifier, predict
from sasq.tools.decode import StepBackend
from sasq.tools.digits import load_split
from sasq.tools.generate import GenerateConfig, generate_many, make_backend
from sasq.tools.metrics import fid, inception_score, token_agreement

ROWS = (
    "peer-minmax",
    "peer-entropy",
    "peer-linears",
    "plain",
    "fp32-cache",
    "kv6",
    "kv4",
    "kv4-shift-sum",
    "resample",
    "shift-sum",
    "both",
    "gps-stwq",
    "paper-ref",
)
# Rows with an int8 KV cache narrower than the cell's activations (simulated): row -> bits.
_KV_BITS = {"kv6": 6, "kv4": 4, "kv4-shift-sum": 4}


@dataclass(frozen=True)
class EvalConfig:
    per_class: int = 100  # 1,000 samples on the 10-class default
    bits: tuple[str, ...] = ("W8A8", "W6A6", "W4A8")
    rows: tuple[str, ...] = ROWS
    calib_samples: int = 32
    seed: int = 0
    batch: int = 100
    progress: bool = True


@dataclass
class _Ref:
    labels: np.ndarray
    idx: list[torch.Tensor]
    feats: np.ndarray
    real_feats: np.ndarray


def _score(clf: DigitsClassifier, gen, ref: _Ref) -> dict:
    probs, feats = predict(clf, gen.img)
    return {
        "IS": round(inception_score(probs), 3),
        "FID": round(fid(feats, ref.real_feats), 3),
        "FID2FP": round(fid(feats, ref.feats), 3),
        "class_acc": round(float((probs.argmax(1) == ref.labels).mean()), 4),
        "token_agreement": round(float(np.mean(token_agreement(ref.idx, gen.idx))), 4),
    }


class _Workspace:
    """Exports, calibration caches and quantized folders, each made once per evaluation."""

    def __init__(self, model: LoadedModel, root: Path, ec: EvalConfig):
        from sasq.exporter import export_model

        self.model, self.root, self.ec = model, root, ec
        self.fp = root / "fp"
        export_model(model, self.fp)
        self._caches: dict[tuple[Path, str], object] = {}
        self._reader = None

    def cache(self, resample: str, fp: Path | None = None):
        from sasq.calib.calibrate import CalibConfig, calibrate

        fp = fp or self.fp
        if (fp, resample) not in self._caches:
            cc = CalibConfig(
                num_samples=self.ec.calib_samples,
                resample=resample,
                observer="minmax",
                seed=self.ec.seed,
                progress=False,
            )
            self._caches[fp, resample] = calibrate(fp, cc).cache
        return self._caches[fp, resample]

    def gps_export(self, w: int, a: int) -> Path:
        """The FP export with GPS balanced for (w, a) bits."""
        from sasq.calib.gps import GPSConfig, apply_gps
        from sasq.exporter import export_model

        out = self.root / f"fp-gps-W{w}A{a}"
        if not out.exists():
            gc = GPSConfig(
                num_samples=self.ec.calib_samples,
                w_bits=w,
                a_bits=a,
                resample="none",  # as the plain row's calibration
                seed=self.ec.seed,
                progress=False,
            )
            model, notes = apply_gps(self.model, gc)
            export_model(model, out, notes={"gps": notes})
        return out

    def peer(self, method: str) -> Path:
        """``minmax`` / ``entropy``: quantize_static on every MatMul; ``linears``: MinMax on
        the linears only, attention left in float."""
        from sasq.calib.calibrate import CalibConfig
        from sasq.calib.data_reader import record_step_feeds
        from sasq.exporter.peer import peer_quantize

        if self._reader is None:
            cc = CalibConfig(
                num_samples=self.ec.calib_samples,
                resample="ours",
                seed=self.ec.seed,
                progress=False,
            )
            self._reader = record_step_feeds(self.fp, cc)
        out = self.root / f"peer-{method}"
        if method == "linears":
            return peer_quantize(self.fp, self._reader, "minmax", out, scope="linears")
        return peer_quantize(self.fp, self._reader, method, out)

    def sasq(self, row: str, w: int, a: int) -> Path:
        from sasq.exporter.qdq_config import QuantConfig, ShiftSumConfig
        from sasq.exporter.quantize import quantize

        resample = "ours" if row in ("resample", "both") else "none"
        shift = row in ("shift-sum", "both", "kv4-shift-sum")
        gps = row == "gps-stwq"
        fp = self.gps_export(w, a) if gps else self.fp
        qc = QuantConfig(
            w_bits=w,
            a_bits=a,
            shift_sum=ShiftSumConfig(enabled=shift),
            static_per_step=gps,
            kv_cache="fp32" if row == "fp32-cache" else "int8",
            kv_bits=_KV_BITS.get(row),
        )
        return quantize(fp, self.cache(resample, fp), qc, self.root / f"{row}-W{w}A{a}")


def _backend_for(ws: _Workspace, row: str, bits: str) -> StepBackend | None:
    """The backend of one cell, or None where the row has no such bit width."""
    w, a = BIT_WIDTHS[bits]
    if row.startswith("peer-"):
        return make_backend("ort", None, ws.peer(row[5:])) if bits == "W8A8" else None
    if row == "paper-ref":
        from sasq.tools.paper_quant import PaperQuantBackend, PaperQuantConfig

        return PaperQuantBackend(ws.model, PaperQuantConfig(w_bits=w, a_bits=a))
    return make_backend("ort", None, ws.sasq(row, w, a))


def evaluate(model: LoadedModel, clf: DigitsClassifier, ec: EvalConfig) -> dict:
    """Every (row, bits) cell against FP; FP vs FP (another seed) as the noise floor."""
    t0 = time.perf_counter()
    K = model.var.num_classes
    labels = tuple(c for c in range(K) for _ in range(ec.per_class))

    def run(backend: StepBackend, seed: int = ec.seed):
        return generate_many(model.cfg, backend, GenerateConfig(labels, seed, ec.batch))

    fp = run(make_backend("torch", model))
    _, fp_feats = predict(clf, fp.img)
    _, real = predict(clf, load_split(model.cfg.vqvae.image_size).test_x)
    ref = _Ref(np.asarray(labels), fp.idx, fp_feats, real)
    table: dict[str, dict[str, dict | None]] = {
        "FP": {b: _score(clf, fp, ref) for b in ec.bits},
        "FP (seed+1)": {
            b: _score(clf, run(make_backend("torch", model), ec.seed + 1), ref) for b in ec.bits[:1]
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        ws = _Workspace(model, Path(tmp), ec)
        cells = [(r, b) for r in ec.rows for b in ec.bits]
        for row, bits in tqdm(cells, desc="eval", disable=not ec.progress):
            backend = _backend_for(ws, row, bits)
            table.setdefault(row, {})[bits] = (
                None if backend is None else _score(clf, run(backend), ref)
            )
    return {
        "config": asdict(ec),
        "samples": len(labels),
        "table": table,
        "seconds": round(time.perf_counter() - t0, 1),
        "notes": [
            "peer rows are int8 only (ORT quantize_static); None = not applicable",
            "plain/resample/shift-sum/both/gps-stwq: sasq static Q/DQ, minmax observer, "
            "int8 KV cache (ort target)",
            "fp32-cache: the earlier graph (float cache re-quantized every step); kv6/kv4: "
            "the cache at 6 / 4 bits (simulated)",
            "peer-linears: quantize_static MinMax on the linears only, attention in float",
            "FP (seed+1): noise floor of FID2FP and token agreement",
        ],
    }


def to_markdown(r: dict) -> str:
    metrics = ("IS", "FID", "FID2FP", "class_acc", "token_agreement")
    bits = r["config"]["bits"]
    head = "| row | " + " | ".join(f"{b} {m}" for b in bits for m in metrics) + " |"
    lines = [
        f"# sasq eval ({r['samples']} samples, {r['seconds']} s)",
        "",
        head,
        "|---|" + "---|" * (len(bits) * len(metrics)),
    ]
    for row, cells in r["table"].items():
        vals = []
        for b in bits:
            c = cells.get(b)
            vals += [("" if c is None else str(c[m])) for m in metrics]
        lines.append(f"| {row} | " + " | ".join(vals) + " |")
    return "\n".join([*lines, "", *[f"- {n}" for n in r["notes"]], ""])


def write_report(r: dict, out_dir: Path) -> tuple[Path, Path]:
    return atomic.write_report(r, out_dir, "eval", to_markdown)
