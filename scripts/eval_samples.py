"""Per-sample scores of ``sasq eval`` cells, saved, and the intervals recomputed from them.

``sasq eval`` keeps only its intervals; to re-derive them with another interval method the
per-sample numbers are needed. This runs the same cells as ``sasq eval`` (same Scorer,
Workspace and backends, so the same samples for the same seed) and saves each cell's
classifier outputs and token agreement; ``intervals`` then prints every number and every
paired difference from the saved scores with the current ``sasq.tools.quality.intervals``.

    python scripts/eval_samples.py run MODEL PER_CLASS ROWS BITS OUT   # e.g. default 50
    python scripts/eval_samples.py intervals OUT [REPLICATES]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from sasq.tools.quality.config import EvalConfig
from sasq.tools.quality.evaluate import BASELINE, METRICS, Scorer, Workspace, _backend_for, _samples
from sasq.tools.quality.intervals import (
    SampleScores,
    difference,
    draws,
    intervals,
    metric_fns,
    replicates,
)


def _save(path: Path, s: SampleScores) -> None:
    arrays = {"probs": s.probs, "feats": s.feats, "correct": s.correct, "agreement": s.agreement}
    np.savez_compressed(path, **arrays)


def _load(path: Path) -> SampleScores:
    d = np.load(path)
    return SampleScores(d["probs"], d["feats"], d["correct"], d["agreement"])


def run(model_name: str, per_class: int, rows: list[str], bits: list[str], out: Path) -> None:
    import tempfile

    from sasq.engines.backends import make_backend
    from sasq.models import load_model
    from sasq.tools.quality.classifier import predict
    from sasq.tools.quality.digits import load_split
    from sasq.tools.quality.scores import default_classifier

    out.mkdir(parents=True, exist_ok=True)
    model, clf = load_model(model_name), default_classifier()
    ec = EvalConfig(per_class=per_class, bits=tuple(bits), rows=tuple(rows), progress=False)
    sc = Scorer(model, clf, ec)
    labels = np.asarray(sc.labels)
    _, real = predict(clf, load_split(model.cfg.vqvae.image_size).test_x)
    np.save(out / "real.npy", real)
    _save(out / "FP.npz", _samples(clf, sc.fp, labels, sc.fp.idx))
    seed1 = sc.run(make_backend("torch", model), ec.seed + 1)
    _save(out / "FP (seed+1).npz", _samples(clf, seed1, labels, sc.fp.idx))
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(model, Path(tmp), ec)
        for row in rows:
            for b in bits:
                path = out / f"{row}@{b}.npz"
                if path.exists():  # an earlier, interrupted run saved it: same seed, same cell
                    continue
                backend = _backend_for(ws, row, b)
                if backend is not None:
                    _save(path, _samples(clf, sc.run(backend), labels, sc.fp.idx))
                    print(f"saved {row}@{b}", flush=True)


def _fmt(iv) -> str:
    return f"{iv.value:+.4g} [{iv.lo:+.4g}, {iv.hi:+.4g}]"


def print_intervals(out: Path, replicates_n: int = 1000) -> None:
    fp = _load(out / "FP.npz")
    fns = metric_fns(fp.feats, np.load(out / "real.npy"))
    n, K = fp.probs.shape
    labels = np.repeat(np.arange(K), n // K)  # the Scorer's order: every class in turn
    hs = draws(n, replicates_n, 0, strata=labels)
    reps = {p.stem: replicates(fns, _load(p), hs) for p in sorted(out.glob("*.npz"))}
    print("| cell | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for cell, r in reps.items():
        ivs = intervals(r)
        print(f"| {cell} | " + " | ".join(_fmt(ivs[m]) for m in METRICS) + " |")
    print("\nPaired differences from each row's baseline (* = the interval excludes 0):\n")
    for cell, r in reps.items():
        if "@" not in cell:
            continue
        row, b = cell.split("@")
        base = BASELINE.get(row, "plain")
        if base is None or f"{base}@{b}" not in reps or base == row:
            continue
        d = difference(r, reps[f"{base}@{b}"])
        said = [f"{m} {_fmt(d[m])}{' *' if d[m].excludes(0.0) else ''}" for m in METRICS]
        print(f"- {row} vs {base} at {b}: " + "; ".join(said))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        _, _, name, pc, rows, bits, out = sys.argv
        run(name, int(pc), rows.split(","), bits.split(","), Path(out))
    else:
        print_intervals(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1000)
