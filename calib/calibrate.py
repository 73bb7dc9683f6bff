"""Calibration: rollouts of the FP model through the real decoding loop -> a range cache.

The FP ``step.onnx`` of an export folder runs under ONNX Runtime inside the same host loop
as generation, with the inputs of every quantizable MatMul exposed as extra outputs. After
sampling at each scale, codebook resampling (``--resample ours``) may replace tokens; the
backend then teacher-forces them, so the next scale's recorded activations follow the
model's predicted token frequencies. Observers stream (per tensor, over all steps and per
step), so memory stays bounded whatever the number of samples. The softmax probabilities
of every attention block also give the attention each key position receives, averaged over
queries, per layer and step: what shift-and-sum uses to choose its tokens.

Distribution-guided selection (PTQ4ARVG) first rolls out a larger candidate pool, scores
the conditional and unconditional rows of the CFG batch by the head's input features at
the first scale, and then records only the chosen rows.
"""

from __future__ import annotations

import resource
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from sasq import progress
from sasq.calib.config import CalibConfig
from sasq.calib.observers import ObserverConfig, make_observer
from sasq.calib.resample import ResampleHook
from sasq.calib.selection import select
from sasq.engines.decode import generate
from sasq.engines.ort_backend import OrtBackend
from sasq.engines.ort_session import SessionConfig
from sasq.errors import UserError
from sasq.exporter.manifest import verify
from sasq.files import sha256_file
from sasq.models.config import ModelConfig
from sasq.models.memory import calibration_estimate, require_fits
from sasq.quant.cache import CalibCache, TensorRange
from sasq.quant.settings import SelectionMethod
from sasq.quant.targets import OpKind, QuantTarget, quantizable_inputs


@dataclass
class CalibResult:
    cache: CalibCache
    tv_by_scale: dict[int, tuple[float, float]]  # mean TV (before, after) resampling
    seconds: float
    peak_rss_mb: float
    targets: list[QuantTarget] = field(default_factory=list)


class _Stats:
    """Streaming statistics of one rollout pass: observers per tensor (all steps and per
    step) and summed attention per AV block and step."""

    def __init__(self, names: list[str], av_probs: dict[str, str], cfg: CalibConfig, SN: int):
        ocfg = ObserverConfig(percentile=cfg.percentile)
        self.all = {n: make_observer(cfg.observer, ocfg) for n in names}
        self.steps = {n: [make_observer(cfg.observer, ocfg) for _ in range(SN)] for n in names}
        self.av_probs = av_probs  # AV node -> its probabilities tensor (recorded: its mean)
        self.attn_sum: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
        self.attn_count: dict[str, dict[int, int]] = defaultdict(dict)
        self.rows: np.ndarray | None = None  # CFG-batch rows to keep (DGC), None = all

    def __call__(self, si: int, recorded: dict[str, np.ndarray]) -> None:
        for name in self.all:
            value = recorded[name]
            v = value if self.rows is None or value.ndim == 0 else value[self.rows]
            self.all[name].update(v)
            self.steps[name][si].update(v)
        for node, probs in self.av_probs.items():
            p = recorded[_mean_name(probs)]  # (rows, H, S): probabilities, mean over queries
            p = p if self.rows is None else p[self.rows]
            received = p.reshape(-1, p.shape[-1]).astype(np.float64)
            prev = self.attn_sum[node].get(si, 0.0)
            self.attn_sum[node][si] = prev + received.sum(0)
            self.attn_count[node][si] = self.attn_count[node].get(si, 0) + received.shape[0]


SOFTMAX_AMAX = 1.0  # probabilities: quantized at 1/127 by rule, no observer needed


def _targets(step_path: Path) -> tuple[list[QuantTarget], list[str], dict[str, str]]:
    """Quantizable ops, the tensors to observe, and per AV block its probabilities tensor,
    whose mean over queries is computed in-graph (recording full probabilities of every
    layer at once would cost gigabytes per step on VAR-d16)."""
    model = onnx.load(str(step_path), load_external_data=False)
    targets = quantizable_inputs(model)
    probs = {t.activations[0] for t in targets if t.kind == OpKind.ATTN_AV}
    names = [n for n in dict.fromkeys(a for t in targets for a in t.activations) if n not in probs]
    av = {t.node: t.activations[0] for t in targets if t.kind == OpKind.ATTN_AV}
    return targets, names, av


def _mean_name(probs: str) -> str:
    return f"{probs}__sasq_mean_over_queries"


def _add_query_means(av_probs: dict[str, str]):
    """Graph augmentation: ReduceMean over the query axis (-2) of each AV's probabilities."""

    def augment(model: onnx.ModelProto) -> onnx.ModelProto:
        axes = onnx.numpy_helper.from_array(np.array([-2], np.int64), "sasq_axes_queries")
        model.graph.initializer.append(axes)
        for probs in av_probs.values():
            model.graph.node.append(
                onnx.helper.make_node(
                    "ReduceMean", [probs, axes.name], [_mean_name(probs)], keepdims=0
                )
            )
        return model

    return augment


def _rollouts(
    onnx_dir: Path,
    labels: list[int],
    cfg: CalibConfig,
    names: list[str],
    on_record,
    model_cfg: ModelConfig,
    desc: str,
    augment=None,
) -> ResampleHook:
    """Run the decoding loop over ``labels`` in batches, recording ``names`` each step."""
    sampling = model_cfg.sampling
    backend = OrtBackend(
        onnx_dir,
        SessionConfig(intra_op_threads=cfg.threads, cpu_mem_arena=False, priority_order=True),
        record=names,
        on_record=on_record,
        augment=augment,
    )
    hook = ResampleHook(sampling, cfg.resample, seed=cfg.seed)
    chunks = torch.tensor(labels).split(cfg.batch)
    for i, chunk in enumerate(progress.bar(chunks, desc, enabled=cfg.progress)):
        generate(
            backend,
            chunk,
            tuple(model_cfg.vqvae.patch_nums),
            sampling,
            cfg.seed + i,
            model_cfg.var.num_classes,
            hook=hook,
        )
    return hook


def _dgc_rows(onnx_dir: Path, labels, cfg, head_input: str, model_cfg) -> list[np.ndarray]:
    """Per batch, the CFG rows DGC keeps: features = head input at scale 0 (one token)."""
    feats: list[np.ndarray] = []

    def grab(si: int, rec: dict[str, np.ndarray]) -> None:
        if si == 0:
            feats.append(rec[head_input].reshape(rec[head_input].shape[0], -1))

    _rollouts(onnx_dir, labels, cfg, [head_input], grab, model_cfg, "dgc features")
    rows_per_batch = []
    k_total = cfg.num_samples * 2
    pool = sum(len(f) for f in feats)
    for f in feats:  # keep the same share of every batch
        B = len(f) // 2
        k = max(1, round(k_total * len(f) / pool))
        rows_per_batch.append(select(f[:B], f[B:], min(k, 2 * B)))
    return rows_per_batch


def refuse_quantized(onnx_dir: Path, extra: dict) -> None:
    """Calibration measures the FP model; a quantized export's ranges would be those of its
    own rounding, and a cache keyed by its step graph fits no FP export: one line instead."""
    for key, what in (("quant", "sasq quantize"), ("peer", "the ONNX Runtime peer")):
        if key in extra:
            src = str(extra[key].get("source_step_sha256", ""))[:12]
            raise UserError(
                f"{onnx_dir} is a quantized export (made by {what} from the FP step graph "
                f"sha256 {src}...); calibrate the FP export it was made from ('sasq export')"
            )


def calibrate(onnx_dir: str | Path, cfg: CalibConfig) -> CalibResult:
    """Calibrate the FP export in ``onnx_dir``; the cache is keyed by its step.onnx hash."""
    if cfg.num_samples < 1:
        raise UserError(
            f"`num_samples` must be at least 1, got {cfg.num_samples}", param="num_samples"
        )
    t0 = time.perf_counter()
    onnx_dir = Path(onnx_dir)
    manifest = verify(onnx_dir)
    refuse_quantized(onnx_dir, manifest.extra)
    model_cfg = ModelConfig.from_dict(manifest.model_config)
    batch = min(cfg.batch, cfg.num_samples)
    external = manifest.graphs["step"].external_data is not None
    require_fits(
        calibration_estimate(model_cfg, batch, external),
        f"a rollout batch of {batch}",
        "lower `batch`",
    )
    step_path = onnx_dir / manifest.graphs["step"].file
    targets, names, av_probs = _targets(step_path)
    K, SN = model_cfg.var.num_classes, len(manifest.patch_nums)
    notes: list[str] = []
    if cfg.num_samples < K:
        notes.append(f"{cfg.num_samples} samples cover only {cfg.num_samples} of {K} classes")
    stats = _Stats(names, av_probs, cfg, SN)
    labels = [i % K for i in range(cfg.num_samples)]
    if cfg.selection == SelectionMethod.DGC:
        head = next(t for t in reversed(targets) if t.kind == OpKind.LINEAR)
        pool = [i % K for i in range(cfg.num_samples * cfg.candidates_factor)]
        rows = iter(_dgc_rows(onnx_dir, pool, cfg, head.activations[0], model_cfg))
        labels, batch_rows = pool, rows
    else:
        batch_rows = None

    def on_record(si: int, recorded: dict[str, np.ndarray]) -> None:
        if batch_rows is not None and si == 0:
            stats.rows = next(batch_rows)
        stats(si, recorded)

    hook = _rollouts(
        onnx_dir,
        labels,
        cfg,
        [*names, *(_mean_name(p) for p in av_probs.values())],
        on_record,
        model_cfg,
        "calibrate",
        augment=_add_query_means(av_probs),
    )
    cache = _build_cache(step_path, cfg, stats, SN, notes, targets)
    for w in cache.warnings:
        warnings.warn(w, stacklevel=2)
    return CalibResult(
        cache=cache,
        tv_by_scale=hook.tv_by_scale(),
        seconds=time.perf_counter() - t0,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        targets=targets,
    )


def _build_cache(
    step_path: Path, cfg: CalibConfig, stats: _Stats, SN: int, notes, targets: list[QuantTarget]
) -> CalibCache:
    ranges, warns = {}, list(notes)
    for t in targets:  # probabilities keep their fixed range, so every input has one
        if t.kind == OpKind.ATTN_AV:
            ranges[t.activations[0]] = TensorRange(SOFTMAX_AMAX, (SOFTMAX_AMAX,) * SN)
    observed = progress.bar(
        stats.all.items(), f"ranges ({cfg.observer})", len(stats.all), cfg.progress
    )
    for name, obs in observed:
        steps = tuple(float(o.range()) if o.count else 0.0 for o in stats.steps[name])
        ranges[name] = TensorRange(amax=float(obs.range()), steps=steps)
        if obs.warning:
            warns.append(f"{name}: {obs.warning}")
        elif obs.is_zero:
            warns.append(f"{name}: constant zero over calibration (tiny scale used)")
    attention = {
        node: tuple(
            tuple(float(v) for v in stats.attn_sum[node][si] / stats.attn_count[node][si])
            for si in range(SN)
            if si in stats.attn_sum[node]
        )
        for node in stats.attn_sum
    }
    settings = cfg.settings()
    return CalibCache(
        model_hash=sha256_file(step_path),
        settings=settings,
        ranges=ranges,
        attention=attention,
        warnings=tuple(warns),
    )
