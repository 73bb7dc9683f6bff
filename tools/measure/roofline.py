"""Every scale against the machine's limit: how far a step is from what the CPU allows.

The limit of a scale is the time of its GEMMs at this machine's best, for the rows of one
generation (2B with CFG, B images): per block the linears (qkv C -> 3C, proj C -> C, fc1
C -> hC with h the MLP ratio, fc2 hC -> C) times the depth, the head (C -> V) once, and both
attention products per row and head, Q K^T (l x d) @ (d x S) and A V (l x S) @ (S x d),
with d = C / heads and S = past + l keys, times the depth. Each GEMM takes the longer of

- compute: ORT's kernel time for one call of a plain MatMul of its own shape, measured in
  the same process (``matmul_peak.kernel_ms``: int8 as Q/DQ -> MatMulIntegerToFloat, fp32
  as MatMul), cache-hot since the benchmark repeats it;
- memory: its right operand's bytes (a linear's weights, the K or V cache an attention
  product reads; 1 byte an element in int8, 4 in fp32) at the measured memory bandwidth
  (``bandwidth``). The first scales are GEMVs over 2-32 rows that read every weight once
  per step, which the cache-hot benchmark does not see.

A scale's bound is the one that gives the larger part of its limit. Joined with measured
times (:func:`join`): per scale step / limit, and for the image end-to-end / sum of limits,
with host ms = end-to-end minus the sum of the steps (decoder, start and next graphs,
sampling) on its own line. Everything else a step does (norms, softmax, the KV cache's
copies, the session's overhead) counts as zero: the limit is a floor, not a forecast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sasq import progress
from sasq.tools.measure.matmul_peak import GemmShape, linear_shapes

if TYPE_CHECKING:
    from sasq.engines.backends import BackendSpec
    from sasq.exporter.manifest import Manifest
    from sasq.models.config import ModelConfig

BYTES = {"int8": 1, "fp32": 4}  # per element of a streamed operand
PRECISIONS = tuple(BYTES)


@dataclass(frozen=True)
class Arch:
    """What the limit needs of a model: its scales and sizes."""

    patch_nums: tuple[int, ...]
    depth: int
    heads: int
    C: int  # embed dim
    V: int  # vocabulary: the head's outputs
    mlp_ratio: float = 4.0

    @classmethod
    def of(cls, source: ModelConfig | Manifest) -> Arch:
        """From a model config, or from an export's manifest (its dims; the MLP ratio
        from the model config it records)."""
        if hasattr(source, "dims"):
            d, var = source.dims, source.model_config.get("var", {})
            return cls(
                tuple(source.patch_nums),
                d["depth"],
                d["num_heads"],
                d["embed_dim"],
                d["vocab_size"],
                float(var.get("mlp_ratio", 4.0)),
            )
        v = source.var
        return cls(
            tuple(v.patch_nums),
            v.depth,
            v.num_heads,
            v.embed_dim,
            source.vqvae.vocab_size,
            v.mlp_ratio,
        )


@dataclass(frozen=True)
class Gemm:
    """One GEMM of a step, run ``count`` times (depth for a block's, once for the head)."""

    shape: GemmShape
    count: int

    @property
    def macs(self) -> int:
        return self.count * self.shape.macs

    @property
    def streamed(self) -> int:
        """Elements of the right operand read per step: weights, or the K / V cache."""
        s = self.shape
        return self.count * s.batch * s.K * s.N


def scale_gemms(arch: Arch, si: int, B: int) -> list[Gemm]:
    """The GEMMs of scale ``si`` for ``B`` images (2B rows with CFG)."""
    rows, pns = 2 * B, arch.patch_nums
    l, past = pns[si] ** 2, sum(p * p for p in pns[:si])
    S, d, bh = past + l, arch.C // arch.heads, 2 * B * arch.heads
    return [
        *(Gemm(s, arch.depth) for s in linear_shapes(rows * l, arch.C, arch.mlp_ratio)),
        Gemm(GemmShape("head", rows * l, arch.C, arch.V), 1),
        Gemm(GemmShape("qk", l, d, S, batch=bh, weight=False), arch.depth),
        Gemm(GemmShape("av", l, S, d, batch=bh, weight=False), arch.depth),
    ]


@dataclass(frozen=True)
class Rates:
    """The machine's side of the limit: memory GB/s (1e9 bytes) and the kernel ms of one
    call per (precision, shape). Measured (:func:`measure_rates`) or given, as tests do."""

    bandwidth_gbps: float
    kernel_ms: Mapping[tuple[str, GemmShape], float]
    bandwidth: dict = field(default_factory=dict)  # how it was measured
    threads: int = 0


@dataclass(frozen=True)
class GemmLimit:
    gemm: Gemm
    compute_ms: float
    memory_ms: float

    @property
    def limit_ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    @property
    def bound(self) -> str:
        return "memory" if self.memory_ms > self.compute_ms else "compute"


def gemm_limit(g: Gemm, precision: str, rates: Rates) -> GemmLimit:
    compute = g.count * rates.kernel_ms[(precision, g.shape)]
    memory = g.streamed * BYTES[precision] / (rates.bandwidth_gbps * 1e9) * 1e3
    return GemmLimit(g, compute, memory)


@dataclass(frozen=True)
class ScaleLimit:
    si: int
    pn: int
    gemms: tuple[GemmLimit, ...]

    @property
    def limit_ms(self) -> float:
        return sum(g.limit_ms for g in self.gemms)

    @property
    def memory_bound_ms(self) -> float:
        """The part of the limit that memory-bound GEMMs give."""
        return sum(g.limit_ms for g in self.gemms if g.bound == "memory")

    @property
    def bound(self) -> str:
        return "memory" if 2 * self.memory_bound_ms > self.limit_ms else "compute"

    def as_dict(self) -> dict:
        gemms = [
            {
                "name": g.gemm.shape.name,
                "count": g.gemm.count,
                "macs": g.gemm.macs,
                "compute_ms": g.compute_ms,
                "memory_ms": g.memory_ms,
                "limit_ms": g.limit_ms,
                "bound": g.bound,
            }
            for g in self.gemms
        ]
        return {
            "si": self.si,
            "pn": self.pn,
            "limit_ms": self.limit_ms,
            "bound": self.bound,
            "gemms": gemms,
        }


def image_limit(arch: Arch, B: int, precision: str, rates: Rates) -> list[ScaleLimit]:
    """The limit of every scale of one generation of ``B`` images; their sum is the
    image's (``sum(s.limit_ms for s in ...)``)."""
    return [
        ScaleLimit(si, pn, tuple(gemm_limit(g, precision, rates) for g in scale_gemms(arch, si, B)))
        for si, pn in enumerate(arch.patch_nums)
    ]


def measure_rates(
    arch: Arch,
    batches: Sequence[int],
    precisions: Sequence[str],
    threads: int = 0,
    repeats: int = 10,
    budget_s: float = 0.5,
) -> Rates:
    """Time every GEMM shape of ``arch`` at ``batches`` in each precision, and the memory
    bandwidth, with ``threads`` ORT intra-op threads and stream threads (0: all cores)."""
    from sasq.tools.measure.bandwidth import memory_bandwidth
    from sasq.tools.measure.matmul_peak import kernel_ms

    shapes = list(
        dict.fromkeys(
            g.shape
            for B in batches
            for si in range(len(arch.patch_nums))
            for g in scale_gemms(arch, si, B)
        )
    )
    todo = [(p, s) for p in precisions for s in shapes]
    table = {
        (p, s): kernel_ms(s, p == "int8", threads, repeats, budget_s)
        for p, s in progress.bar(todo, f"roofline: {len(todo)} GEMM shapes")
    }
    bw = memory_bandwidth(threads or os.cpu_count() or 1)
    return Rates(bw["gbps"], table, bw, threads)


def rates_record(rates: Rates) -> dict:
    """``rates`` as JSON: every number the limits are derived from."""
    gemms = [
        {
            "precision": p,
            "name": s.name,
            "batch": s.batch,
            "M": s.M,
            "K": s.K,
            "N": s.N,
            "weight": s.weight,
            "kernel_ms": ms,
            "gops": 2 * s.macs / ms / 1e6 if ms else None,
        }
        for (p, s), ms in rates.kernel_ms.items()
    ]
    return {
        "bandwidth_gbps": rates.bandwidth_gbps,
        "bandwidth": rates.bandwidth,
        "threads": rates.threads,
        "bytes_per_element": BYTES,
        "gemms": gemms,
    }


def join(
    scales: Sequence[ScaleLimit], step_ms: Sequence[float], e2e_ms: float | None, precision: str
) -> dict:
    """Measured times against the limits: per scale step / limit, and for the image
    end-to-end / sum of limits, host ms = end-to-end minus the sum of the steps. Without an
    end-to-end time (a profile of the step graph alone) those three are None."""
    limit, steps = sum(s.limit_ms for s in scales), sum(step_ms)
    rows = [
        {
            "si": s.si,
            "pn": s.pn,
            "step_ms": ms,
            "limit_ms": s.limit_ms,
            "bound": s.bound,
            "memory_bound_ms": s.memory_bound_ms,
            "ratio": ms / s.limit_ms if s.limit_ms else None,
        }
        for s, ms in zip(scales, step_ms, strict=True)
    ]
    return {
        "precision": precision,
        "limit_ms": limit,
        "e2e_ms": e2e_ms,
        "e2e_over_limit": e2e_ms / limit if e2e_ms is not None and limit else None,
        "host_ms": e2e_ms - steps if e2e_ms is not None else None,
        "steps_ms": steps,
        "steps_over_limit": steps / limit if limit else None,
        "scales": rows,
    }


def row_precision(spec: BackendSpec) -> str | None:
    """The precision a bench row's limit is taken at: int8 for an export whose manifest
    records a quantization (``quant``, or ORT's quantizer: ``peer``), fp32 for the rest
    and for torch rows; None for a GPU row (this is a CPU limit)."""
    from sasq.engines.backends import KINDS

    kind = KINDS[spec.kind]
    if kind.gpu:
        return None
    if kind.model or spec.folder is None:
        return "fp32"
    return export_precision(spec.folder)


def export_precision(folder) -> str:
    """int8 if the export's manifest records a quantization, else fp32."""
    from sasq.exporter.manifest import load_manifest

    return precision_of(load_manifest(folder).extra)


def precision_of(extra: Mapping) -> str:
    """int8 for a manifest ``extra`` that records a quantization (sasq's ``quant``, or ORT's
    quantizer: ``peer``), else fp32."""
    return "int8" if "quant" in extra or "peer" in extra else "fp32"


def bench_roofline(
    arch: Arch,
    precisions: Mapping[str, str | None],
    runs: list[dict],
    threads: int,
    rates: Rates | None = None,
) -> dict:
    """Add ``roofline`` (label -> :func:`join`) to each bench run, for the rows with a
    precision; returns the rates (measured here unless given) as :func:`rates_record`."""
    used = sorted({p for p in precisions.values() if p})
    if rates is None:
        rates = measure_rates(arch, [run["batch"] for run in runs], used, threads)
    for run in runs:
        limits = {p: image_limit(arch, run["batch"], p, rates) for p in used}
        run["roofline"] = {
            label: join(limits[p], r["step_ms_median"], r["e2e_ms_median"], p)
            for label, r in run["backends"].items()
            if (p := precisions.get(label))
        }
    return rates_record(rates)


def markdown(roof: Mapping[str, dict]) -> list[str]:
    """Markdown tables of one batch's rows (label -> :func:`join`): one line per row,
    then per scale the limit, its bound and each row's step / limit."""

    def f(x: float | None, fmt: str = ".2f") -> str:
        return "-" if x is None else format(x, fmt)

    lines = [
        "| backend | precision | limit ms | end-to-end ms | end-to-end / limit | "
        "steps ms | steps / limit | host ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {r['precision']} | {r['limit_ms']:.3f} | {f(r['e2e_ms'])} | "
        f"{f(r['e2e_over_limit'])}x | {r['steps_ms']:.2f} | {f(r['steps_over_limit'])}x | "
        f"{f(r['host_ms'])} |"
        for n, r in roof.items()
    ]
    by_prec = {r["precision"]: r["scales"] for r in roof.values()}
    head = ["scale", "pn"]
    head += [f"{p} {c}" for p in by_prec for c in ("limit ms", "bound", "memory-bound share")]
    head += [f"{n} step / limit" for n in roof]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, sc in enumerate(next(iter(by_prec.values()))):
        cells = [str(sc["si"]), str(sc["pn"])]
        for rows in by_prec.values():
            s = rows[i]
            share = s["memory_bound_ms"] / s["limit_ms"] if s["limit_ms"] else 0.0
            cells += [f"{s['limit_ms']:.4f}", s["bound"], f"{100 * share:.0f}%"]
        cells += [f"{f(r['scales'][i]['ratio'])}x" for r in roof.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rates_note(record: dict) -> str:
    """What the limits rest on, and how to read them, in one paragraph."""
    bw = record["bandwidth"]
    return (
        "Limit: the step's GEMMs (linears, head, attention) at this machine's best, each the "
        "longer of its kernel time as a plain MatMul of its shape and its weights (or K / V "
        "cache) read at the memory bandwidth; all else counts as zero, so a ratio says how "
        "far a step is from that floor (below 1: the row's own GEMMs beat ORT's plain "
        "MatMul). Memory bandwidth "
        f"{record['bandwidth_gbps']:.1f} GB/s (read {bw.get('read_gbps', 0):.1f}, copy "
        f"{bw.get('copy_gbps', 0):.1f}; {bw.get('threads', '?')} threads, "
        f"{bw.get('buffer_bytes', 0) >> 20} MiB); {len(record['gemms'])} GEMM shapes timed "
        f"(ORT kernel time, threads {record['threads'] or 'all'}), each rate in the JSON "
        "under `roofline.gemms`."
    )
