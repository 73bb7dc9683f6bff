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

import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sasq import progress
from sasq.engines.backends import make_backend
from sasq.engines.config import GenerateConfig
from sasq.engines.decode import StepBackend
from sasq.engines.generate import generate_many
from sasq.exporter.qdq_config import BIT_WIDTHS
from sasq.models import LoadedModel
from sasq.tools.quality.classifier import DigitsClassifier, predict
from sasq.tools.quality.config import EvalConfig
from sasq.tools.quality.digits import load_split
from sasq.tools.quality.eval_precision import (
    PRECISION_BASELINE,
    PRECISION_NOTES,
    PRECISION_ROWS,
    precision_backend,
)
from sasq.tools.quality.intervals import (
    HalfSamples,
    SampleScores,
    difference_dicts,
    draws,
    interval,
    intervals,
    metric_fns,
    replicates,
)
from sasq.tools.report import json_md
from sasq.tools.report.int8_record import backend_record, cpu_record, grouped_lines

# Each row's paired difference is taken against its own baseline: the row it ablates.
BASELINE = {
    "v-only-shift-sum": "v-only", "kv4-shift-sum": "kv4", "v-only": None, **PRECISION_BASELINE
}  # fmt: skip
METRICS = ("token_agreement", "FID2FP", "FID", "IS", "class_acc")
# Rows with an int8 KV cache narrower than the cell's activations (simulated): row -> bits.
_KV_BITS = {"kv6": 6, "kv4": 4, "kv4-shift-sum": 4}


def _samples(clf: DigitsClassifier, gen, labels: np.ndarray, fp_idx) -> SampleScores:
    probs, feats = predict(clf, gen.img)
    agree = [
        (a.reshape(len(labels), -1) == b.reshape(len(labels), -1)).float().mean(1)
        for a, b in zip(fp_idx, gen.idx, strict=True)
    ]
    return SampleScores(
        probs, feats, probs.argmax(1) == labels, torch.stack(agree, 1).mean(1).numpy()
    )


def _av_sqnr(backend, hs: HalfSamples) -> dict:
    """The V-only rows: AV-output SQNR (dB) pooled over layers and per layer, with intervals
    over images (signal and noise energies summed over the drawn images)."""
    sig, noise = backend.av_error.per_image()

    def db(s: np.ndarray, n: np.ndarray) -> float:
        return float(10 * np.log10(s.sum() / max(n.sum(), 1e-300)))

    def reps(s: np.ndarray, n: np.ndarray) -> tuple[float, np.ndarray]:
        v = db(s, n)
        return v, hs.deviations(v, lambda i: db(s[i], n[i]))

    return {
        "AV_SQNR_dB": reps(sig, noise),
        "per_layer": [
            interval(*reps(sig[:, L], noise[:, L])).as_dict(2) for L in range(sig.shape[1])
        ],
    }


class Scorer:
    """Generates the FP reference once and scores any backend's samples against it: the
    same labels and seed for every backend, one set of half-samples for all (paired)."""

    def __init__(self, model: LoadedModel, clf: DigitsClassifier, ec: EvalConfig):
        self.model, self.clf, self.ec = model, clf, ec
        K = model.var.num_classes
        self.labels = tuple(c for c in range(K) for _ in range(ec.per_class))
        self._labels_np = np.asarray(self.labels)
        progress.stage(f"eval: FP reference, {len(self.labels)} samples", ec.progress)
        self.fp = self.run(make_backend("torch", model), show=ec.progress)
        fp_scores = _samples(clf, self.fp, self._labels_np, self.fp.idx)
        _, real = predict(clf, load_split(model.cfg.vqvae.image_size).test_x)
        self.fns = metric_fns(fp_scores.feats, real)
        # Half of each class per draw: eval generates fixed counts of every class.
        self.idx = draws(len(self.labels), ec.bootstrap, ec.seed, strata=self._labels_np)

    def run(self, backend: StepBackend, seed: int | None = None, show: bool = False):
        seed = self.ec.seed if seed is None else seed
        gc = GenerateConfig(self.labels, seed, self.ec.batch, progress=show)
        return generate_many(self.model.cfg, backend, gc)

    def replicates(self, gen, backend=None) -> tuple[dict, dict]:
        """metric -> (value, replicates), and extra per-layer numbers (V-only rows)."""
        r = replicates(self.fns, _samples(self.clf, gen, self._labels_np, self.fp.idx), self.idx)
        extra = {}
        if backend is not None and hasattr(backend, "av_error") and backend.qc.v_only:
            sq = _av_sqnr(backend, self.idx)
            r["AV_SQNR_dB"] = sq["AV_SQNR_dB"]
            extra["AV_SQNR_dB_per_layer"] = sq["per_layer"]
        return r, extra


class Workspace:
    """Exports, calibration caches and quantized folders, each made once per evaluation."""

    def __init__(self, model: LoadedModel, root: Path, ec: EvalConfig):
        from sasq.exporter import ExportConfig, export_model

        self.model, self.root, self.ec = model, root, ec
        self.fp = root / "fp"
        progress.stage("eval: exporting the FP graphs", ec.progress)
        export_model(model, self.fp, ExportConfig(progress=ec.progress))
        self._caches: dict[tuple[Path, str, bool], object] = {}
        self._reader = None

    def cache(self, resample: str, fp: Path | None = None, dgc: bool = False):
        from sasq.calib.calibrate import CalibConfig, calibrate
        from sasq.quant.settings import SelectionMethod

        fp = fp or self.fp
        if (fp, resample, dgc) not in self._caches:
            cc = CalibConfig(
                num_samples=self.ec.calib_samples,
                resample=resample,
                observer="minmax",
                seed=self.ec.seed,
                progress=False,
                selection=SelectionMethod.DGC if dgc else SelectionMethod.ALL,
            )
            self._caches[fp, resample, dgc] = calibrate(fp, cc).cache
        return self._caches[fp, resample, dgc]

    def gps_export(self, w: int, a: int) -> Path:
        """The FP export with GPS balanced for (w, a) bits."""
        from sasq.calib.gps import GPSConfig, apply_gps
        from sasq.exporter import ExportConfig, export_model

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
            export_model(model, out, ExportConfig(progress=False), notes={"gps": notes})
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
        cache = self.cache(resample, fp, dgc=row == "dgc")
        return quantize(fp, cache, qc, self.root / f"{row}-W{w}A{a}")


def _backend_for(ws: Workspace, row: str, bits: str) -> StepBackend | None:
    """The backend of one cell, or None where the row has no such bit width."""
    w, a = BIT_WIDTHS[bits]
    if row in PRECISION_ROWS:
        return precision_backend(ws, row, bits)
    if row.startswith("peer-"):
        return make_backend("ort", None, ws.peer(row[5:])) if bits == "W8A8" else None
    if row == "paper-ref" or row.startswith("v-only"):
        from sasq.engines.paper_quant import PaperQuantBackend, PaperQuantConfig

        v_only = row.startswith("v-only")
        pc = PaperQuantConfig(w_bits=w, a_bits=a, v_only=v_only, shift_sum=row != "v-only")
        return PaperQuantBackend(ws.model, pc)
    return make_backend("ort", None, ws.sasq(row, w, a))


def evaluate(model: LoadedModel, clf: DigitsClassifier, ec: EvalConfig) -> dict:
    """Every (row, bits) cell against FP, each number with its 95% interval, and
    each row's paired difference from its baseline; FP vs FP with another seed is the noise
    floor."""
    t0 = time.perf_counter()
    sc = Scorer(model, clf, ec)
    reps: dict[tuple[str, str], dict] = {}

    def score(row: str, bits: str, gen, backend=None) -> dict:
        r, extra = sc.replicates(gen, backend)
        reps[row, bits] = r
        return {m: iv.as_dict() for m, iv in intervals(r).items()} | extra

    b0 = ec.bits[0]
    progress.stage("eval: FP with seed+1 (the noise floor)", ec.progress)
    table: dict[str, dict[str, dict | None]] = {
        "FP": {b0: score("FP", b0, sc.fp)},
        "FP (seed+1)": {
            b0: score(
                "FP (seed+1)", b0, sc.run(make_backend("torch", model), ec.seed + 1, ec.progress)
            )
        },
    }
    int8: dict[str, dict] = {}  # row -> bits -> the int8 kernels the cell ran, and why
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(model, Path(tmp), ec)
        cells = [(r, b) for r in ec.rows for b in ec.bits]
        for row, bits in progress.bar(cells, "eval", enabled=ec.progress):
            backend = _backend_for(ws, row, bits)
            table.setdefault(row, {})[bits] = (
                None if backend is None else score(row, bits, sc.run(backend), backend)
            )
            if (rec := backend_record(backend)) is not None:
                int8.setdefault(row, {})[bits] = rec
    return {
        "config": asdict(ec),
        "samples": len(sc.labels),
        "table": table,
        "int8": {"cpu": cpu_record(), "cells": int8},
        "differences": _differences(reps, ec),
        "seconds": round(time.perf_counter() - t0, 1),
        "notes": _notes(ec),
    }


# (the rows a note is about, or None for every table; the note)
_NOTES: tuple[tuple[tuple[str, ...] | None, str], ...] = (
    (None, "every number: value ± half-width of its 95% interval over the samples, by "
     "half-sampling without replacement (the interval itself in eval.json); FID's real "
     "test digits held fixed"),
    (None, "FP (seed+1): FP against FP with another seed, the noise floor of FID2FP and token "
     "agreement"),
    (("peer-minmax", "peer-entropy", "peer-linears"),
     "ROWS: ONNX Runtime's quantize_static (int8 only; MinMax / Entropy on every MatMul)"),
    (("peer-linears",), "peer-linears: quantize_static MinMax on the linears only, attention "
     "in float"),
    (("plain", "resample", "dgc", "shift-sum", "both", "gps-stwq"),
     "ROWS: sasq static Q/DQ, minmax observer, int8 KV cache (ort target)"),
    (("dgc",), "dgc: calibration images chosen by distribution-guided selection (PTQ4ARVG)"),
    (("fp32-cache",), "fp32-cache: the earlier graph (float cache re-quantized every step)"),
    (("kv6", "kv4", "kv4-shift-sum"), "ROWS: the KV cache at 6 / 4 bits (simulated)"),
    (("v-only", "v-only-shift-sum"),
     "ROWS: only V of the AV product quantized at the cell's activation bits "
     "(per head, the paper's quantizer), all else FP; AV SQNR is the AV output's error "
     "against the same probabilities times the FP V"),
    *PRECISION_NOTES,
)  # fmt: skip


def _notes(ec: EvalConfig) -> list[str]:
    """The notes of the rows this evaluation ran (naming only those), and how differences
    are marked where a row and its baseline both ran."""
    notes = []
    for rows, text in _NOTES:
        ran = [r for r in (rows or ()) if r in ec.rows]
        if rows is None or ran:
            notes.append(text.replace("ROWS", ", ".join(ran)))
    pairs = [(r, BASELINE.get(r, "plain")) for r in ec.rows if r != "plain"]
    pairs = [(r, b) for r, b in pairs if b in ec.rows and not r.startswith("peer")]
    peers = [r for r in ec.rows if r.startswith("peer")] if "plain" in ec.rows else []
    said = [f"{r} vs {b}" for r, b in pairs] + [f"{r} vs plain" for r in peers]
    if said:
        notes.append(
            f"† differs from the row's baseline ({'; '.join(said)}) on the same half-samples "
            "(paired: same seeds and labels), the 95% interval of the difference "
            "excluding 0"
        )
    return notes


def _differences(reps: dict[tuple[str, str], dict], ec: EvalConfig) -> dict:
    """bits -> row -> metric -> the paired difference from the row's baseline."""
    out: dict[str, dict] = {}
    for (row, bits), r in reps.items():
        base = BASELINE.get(row, "plain")
        if row.startswith("FP") or base is None or base == row or (base, bits) not in reps:
            continue
        out.setdefault(bits, {})[row] = {"baseline": base} | difference_dicts(r, reps[base, bits])
    return out


def fmt(iv: dict) -> str:
    """value ± half-width, to the digits the interval allows (two significant digits of
    the half-width)."""
    hw = (iv["hi"] - iv["lo"]) / 2
    d = 3 if hw <= 0 else min(4, max(0, 1 - math.floor(math.log10(hw))))
    return f"{iv['value']:.{d}f} ± {hw:.{d}f}"


_LABELS = {
    "token_agreement": "token agreement",
    "FID2FP": "FID2FP",
    "FID": "FID",
    "IS": "IS",
    "class_acc": "class acc",
}


def _table(rows: list[tuple[str, dict]], marks: dict[str, set[str]]) -> list[str]:
    lines = [
        "| row | " + " | ".join(_LABELS[m] for m in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for row, cell in rows:
        vals = [fmt(cell[m]) + (" †" if m in marks.get(row, ()) else "") for m in METRICS]
        lines.append(f"| {row} | " + " | ".join(vals) + " |")
    return lines


def to_markdown(r: dict) -> str:
    """A reference table (FP, FP with another seed), then one table per bit width; † marks
    a number that differs significantly from the row's baseline (listed below each table)."""
    bits, table, diffs = r["config"]["bits"], r["table"], r.get("differences", {})
    lines = [
        f"# sasq eval ({r['samples']} samples, {r['seconds']} s)",
        "",
        "Every number: value ± half-width of its 95% half-sampling interval. FP against FP with",
        "another seed is the noise floor of FID2FP and token agreement.",
        "",
        "## FP reference",
        "",
        *_table([(row, table[row][bits[0]]) for row in ("FP", "FP (seed+1)") if row in table], {}),
    ]
    for b in bits:
        rows = [(row, c[b]) for row, c in table.items() if not row.startswith("FP") and c.get(b)]
        if not rows:
            continue
        d = diffs.get(b, {})
        marks = {row: {m for m in METRICS if dm[m]["significant"]} for row, dm in d.items()}
        lines += ["", f"## {b}", "", *_table(rows, marks)]
        sig = [
            f"- {row} vs {dm['baseline']}: {_LABELS[m]} {dm[m]['value']:+.4g} "
            f"[{dm[m]['lo']:+.4g}, {dm[m]['hi']:+.4g}]"
            for row, dm in d.items()
            for m in METRICS
            if dm[m]["significant"]
        ]
        lines += ["", "Significant differences (paired, 95%):", "", *(sig or ["- none"])]
        sq = [(row, c) for row, c in rows if "AV_SQNR_dB" in c]
        if sq:
            lines += [
                "",
                "AV output SQNR (dB), V-only rows:",
                "",
                "| row | all layers | per layer |",
            ]
            lines += ["|---|---|---|"]
            for row, c in sq:
                per = ", ".join(fmt(x) for x in c["AV_SQNR_dB_per_layer"])
                lines.append(f"| {row} | {fmt(c['AV_SQNR_dB'])} | {per} |")
            dv = d.get("v-only-shift-sum", {}).get("AV_SQNR_dB")
            if dv:
                lines.append(
                    f"\nshift-and-sum changes the AV output SQNR by {dv['value']:+.2f} dB "
                    f"[{dv['lo']:+.2f}, {dv['hi']:+.2f}]"
                    + (" (significant)." if dv["significant"] else " (not significant).")
                )
    return "\n".join([*lines, "", "Notes:", "", *[f"- {n}" for n in r["notes"]],
                      *grouped_lines(r.get("int8")), ""])  # fmt: skip


def write_report(r: dict, out_dir: Path) -> tuple[Path, Path, Path]:
    """``eval.json``, ``eval.md`` and ``eval.png`` (token agreement against bits)."""
    from sasq.tools.report.plots import eval_plot

    js, md = json_md.write_report(r, out_dir, "eval", to_markdown)
    return js, md, eval_plot(r, Path(out_dir) / "eval.png")
