"""Speed of the decoding loop: per-scale step latency and end-to-end images/s, every backend
side by side in one run (repeats interleaved, so a noisy machine hits all alike), with
ratios against the first backend and the machine, versions and settings recorded."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from sasq import progress
from sasq.engines.backends import KINDS, BackendSpec, open_spec, parse_spec
from sasq.engines.decode import StepBackend, generate
from sasq.errors import UserError
from sasq.models import LoadedModel
from sasq.tools.measure.config import BenchConfig
from sasq.tools.measure.roofline import markdown as roofline_markdown
from sasq.tools.measure.roofline import rates_note as roofline_note
from sasq.tools.measure.steadiness import load_warning, spread_warning, summary
from sasq.tools.measure.steadiness import loadavg as _loadavg
from sasq.tools.report import json_md
from sasq.tools.report.int8_record import backend_record, cpu_record, report_lines


class _Timed:
    """A StepBackend that records the wall time of each ``step(si)``."""

    def __init__(self, inner: StepBackend):
        self.inner, self.name = inner, inner.name
        self.step_s: dict[int, list[float]] = {}

    def reset(self, label_2B: torch.Tensor) -> None:
        self.inner.reset(label_2B)

    def step(self, si: int) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.inner.step(si)
        self.step_s.setdefault(si, []).append(time.perf_counter() - t0)
        return out

    def advance(self, si: int, idx_Bl: torch.Tensor, soft_BlV: torch.Tensor | None = None) -> None:
        self.inner.advance(si, idx_Bl, soft_BlV)

    def image(self) -> torch.Tensor:
        return self.inner.image()


def _open(spec: BackendSpec, model: LoadedModel, cfg: BenchConfig) -> StepBackend:
    from sasq.engines.trt_plan import BatchRange

    if KINDS[spec.kind].plan:  # a plan carries its own batch range: every row must fit it
        backend = open_spec(spec, model)
        for B in cfg.batch_sizes:
            backend.batch_range.check(B, f"bench row {spec.label}")
        return backend
    lo, hi = min(cfg.batch_sizes), max(cfg.batch_sizes)
    return open_spec(spec, model, cfg.threads, BatchRange(lo, hi, hi), cfg.int8_kernels,
                     cfg.io_binding)  # fmt: skip


def require_folders(backends: tuple[str, ...], onnx_dir: Path | None) -> None:
    """Every row that runs an export has one: ``ort`` runs ``--onnx``'s (the default
    backends are torch,ort, so a bare ``sasq bench`` needs ``--onnx``)."""
    bare = [b for b in backends if "=" not in b and b in KINDS and KINDS[b].folder]
    if onnx_dir is None and bare:
        raise UserError(
            f"backend {bare[0]} runs the --onnx export: add --onnx DIR (made by 'sasq export "
            "--out DIR'), or leave it out with --backends (e.g. --backends torch)"
        )


def _ms(seconds: list[float]) -> list[float]:
    return [s * 1e3 for s in seconds]


def run_bench(model: LoadedModel, onnx_dir: str | Path | None, cfg: BenchConfig) -> dict:
    """Time every backend of ``cfg`` on ``model`` (torch) and its export (ort)."""
    onnx_dir = Path(onnx_dir) if onnx_dir is not None else None
    require_folders(cfg.backends, onnx_dir)
    specs = [parse_spec(s, onnx_dir) for s in cfg.backends]
    for spec in specs:
        if spec.folder is not None:
            _check_same_model(model, spec.folder)
    _check_fits(model, cfg)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch_threads = torch.get_num_threads()
    load_before = _loadavg()
    try:
        backends = {spec.label: _open(spec, model, cfg) for spec in specs}
        row_kinds = {
            spec.label: {"kind": spec.kind,
                         "simulated": bool(getattr(backends[spec.label], "simulated", False))}
            for spec in specs
        }  # fmt: skip
        runs = [_run_batch(backends, B, model, cfg) for B in cfg.batch_sizes]
    finally:
        torch.set_num_threads(old_threads)
    machine = _machine()
    # which int8 kernels each backend ran, and why (the same graph is exact or not by CPU)
    machine["int8"] = cpu_record()
    int8 = {name: backend_record(be) for name, be in backends.items()}
    # Other processes' load makes timings noisy (and oversubscribed OpenMP threads spin):
    # the 1-minute load average before and after the run says how quiet the machine was.
    machine["loadavg_1min"] = {"before": load_before, "after": _loadavg()}
    machine["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warnings = _warnings(runs, load_before)
    peak = None
    if cfg.gemm_peak:
        from sasq.tools.measure.matmul_peak import gemm_peak, linear_shapes

        # The last scale's linears at the largest batch: where int8 has the most to gain.
        rows = 2 * max(cfg.batch_sizes) * model.var.patch_nums[-1] ** 2
        peak = gemm_peak(linear_shapes(rows, model.var.C), threads=cfg.threads or 0)
    roof = None
    if cfg.roofline:  # adds each run's "roofline"; keeps what the limits were derived from
        from sasq.tools.measure import roofline as rl

        precisions = {spec.label: rl.row_precision(spec) for spec in specs}
        roof = rl.bench_roofline(rl.Arch.of(model.cfg), precisions, runs, cfg.threads)
    sizes = {spec.label: _step_bytes(spec.folder) for spec in specs if spec.folder is not None}
    return {
        "settings": {
            **asdict(cfg),
            "onnx_dir": str(onnx_dir) if onnx_dir else None,
            "torch_threads": torch_threads,
            "patch_nums": list(model.var.patch_nums),
            "model": _model_info(model, onnx_dir),
            "step_graph_bytes": sizes,
            "row_kinds": row_kinds,
        },
        "machine": machine,
        "runs": runs,
        "int8_kernels": int8,
        "gemm_peak": peak,
        "roofline": roof,
        "warnings": warnings,
    }


def _warnings(runs: list[dict], load_before: float | None) -> list[str]:
    """What makes this run's ratios doubtful: other load on the machine, noisy rows."""
    out = load_warning(load_before)
    for run in runs:
        for name, r in run["backends"].items():
            e2e = {"spread": r["e2e_spread"], "min": r["e2e_ms_min"], "max": r["e2e_ms_max"]}
            out += spread_warning(f"batch {run['batch']}, {name}: end-to-end", e2e)
    return out


def _run_batch(backends: dict[str, StepBackend], B: int, model: LoadedModel, cfg: BenchConfig):
    pns, K = model.var.patch_nums, model.var.num_classes
    labels = torch.arange(B) % K

    def once(be: StepBackend) -> float:
        t0 = time.perf_counter()
        generate(be, labels, pns, model.cfg.sampling, cfg.seed, K)
        return time.perf_counter() - t0

    timed = {name: _Timed(be) for name, be in backends.items()}
    progress.stage(f"bench: batch {B}, {cfg.warmup} warm-up + {cfg.repeats} timed runs of "
                   f"{', '.join(timed)}")  # fmt: skip
    for t in timed.values():
        for _ in range(cfg.warmup):
            once(t)
        t.step_s.clear()
    e2e: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(cfg.repeats):  # interleaved: drift on a shared machine hits every backend
        for name, t in timed.items():
            e2e[name].append(once(t))

    per_backend = {}
    for name, t in timed.items():
        step_ms = [_ms(t.step_s[si]) for si in range(len(pns))]
        e2e_ms = _ms(e2e[name])
        e2e_s = summary(e2e_ms)
        per_backend[name] = {
            "step_ms": step_ms,
            "step_ms_median": [statistics.median(s) for s in step_ms],
            "step_ms_min": [min(s) for s in step_ms],
            "step_ms_max": [max(s) for s in step_ms],
            "e2e_ms": e2e_ms,
            "e2e_ms_median": e2e_s["median"],
            "e2e_ms_min": e2e_s["min"],
            "e2e_ms_max": e2e_s["max"],
            "e2e_spread": e2e_s["spread"],
            "images_per_s": B / (e2e_s["median"] / 1e3),
        }
    base = cfg.backends[0].partition("=")[0]
    ratios = {
        f"{name}/{base}": {
            "step": [
                a / b
                for a, b in zip(
                    r["step_ms_median"], per_backend[base]["step_ms_median"], strict=True
                )
            ],
            "e2e": r["e2e_ms_median"] / per_backend[base]["e2e_ms_median"],
            "images_per_s": r["images_per_s"] / per_backend[base]["images_per_s"],
        }
        for name, r in per_backend.items()
        if name != base
    }
    scales = [
        {"si": si, "pn": pn, "l": pn * pn, "past_len": sum(p * p for p in pns[:si])}
        for si, pn in enumerate(pns)
    ]
    return {"batch": B, "scales": scales, "backends": per_backend, "ratios": ratios}


def _check_same_model(model: LoadedModel, onnx_dir: Path) -> None:
    from sasq.exporter.provenance import require_made_from

    require_made_from(model, onnx_dir)


def _check_fits(model: LoadedModel, cfg: BenchConfig) -> None:
    """Every backend holds its state (KV cache ...) at the largest batch at once."""
    from sasq.models.memory import Estimate, generation_estimate, require_fits

    B, n = max(cfg.batch_sizes), len(cfg.backends)
    one = generation_estimate(model.cfg, B)
    need = Estimate(tuple((f"{name} x{n}", b * n) for name, b in one.parts))
    require_fits(need, f"bench at batch {B}", "lower --batch-sizes")


def _step_bytes(folder: Path) -> int:
    """Size on disk of the step graph (with its external data): what quantization shrinks."""
    from sasq.exporter.manifest import load_manifest

    spec = load_manifest(folder).graphs["step"]
    return sum((folder / f).stat().st_size for f in (spec.file, spec.external_data) if f)


def _model_info(model: LoadedModel, onnx_dir: Path | None) -> dict:
    info = {
        "var_params": sum(p.numel() for p in model.var.parameters()),
        "vqvae_params": sum(p.numel() for p in model.vqvae.parameters()),
        "depth": model.var.depth,
        "embed_dim": model.var.C,
    }
    if onnx_dir is not None:
        from sasq.exporter.manifest import load_manifest

        info["onnx_bytes"] = sum(f.bytes for f in load_manifest(onnx_dir).files.values())
    return info


def _machine() -> dict:
    import onnxruntime

    import sasq

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "versions": {
            "sasq": sasq.__version__,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "ort_providers": onnxruntime.get_available_providers(),
        "gpu": _gpu(),
    }


def _gpu() -> dict | None:
    """The GPU and TensorRT behind GPU rows (None where no CUDA GPU is visible)."""
    from importlib.metadata import PackageNotFoundError, version

    from sasq.engines.trt_device import gpu_count, gpu_name

    if gpu_count() == 0:
        return None
    try:
        trt = version("tensorrt")
    except PackageNotFoundError:
        trt = None
    return {"name": gpu_name(), "count": gpu_count(), "tensorrt": trt}


def write_report(result: dict, out_dir: str | Path) -> tuple[Path, Path, Path]:
    """``bench.json`` (everything), ``bench.md`` (tables) and ``bench.png`` (latency per
    scale, speed-up bars), each written atomically."""
    from sasq.tools.report.plots import bench_plot

    js, md = json_md.write_report(result, Path(out_dir), "bench", to_markdown)
    return js, md, bench_plot(result, Path(out_dir) / "bench.png")


def to_markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    load = m.get("loadavg_1min")
    load_txt = (
        f"; 1-min load average {load['before']} before, {load['after']} after" if load else ""
    )
    lines = [
        "# sasq bench",
        "",
        f"{m['platform']}, {m['cpu_count']} CPUs, threads {s['threads']}, "
        f"repeats {s['repeats']} (warmup {s['warmup']}), seed {s['seed']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + load_txt,
        "",
        "Step latency is the median of one `step(si)` per generation; ratios are "
        "latency (or throughput) of a backend over the first.",
    ]
    gpu = m.get("gpu")
    if gpu:
        lines += ["", f"GPU: {gpu['name']}, TensorRT {gpu['tensorrt'] or 'not installed'}."]
    sim = [n for n, r in s.get("row_kinds", {}).items() if r["simulated"]]
    if sim:
        note = (f"Simulated rows ({', '.join(sim)}): TensorRT's I/O contract over ONNX "
                "Runtime's CPU math, no GPU: their times say nothing about TensorRT.")  # fmt: skip
        lines += ["", note]
    lines += report_lines(m.get("int8"), result.get("int8_kernels"))
    if result.get("warnings"):
        lines += ["", "**Warnings** (these ratios are doubtful):", ""]
        lines += [f"- {w}" for w in result["warnings"]]
    for run in result["runs"]:
        names = list(run["backends"])
        ratio_keys = list(run["ratios"])
        base = names[0]
        lines += ["", f"## batch {run['batch']}", ""]
        lines += [
            f"| backend | end-to-end ms, median | min | max | spread | speed-up vs {base} |",
            "|---|---|---|---|---|---|",
        ]
        for n in names:
            r = run["backends"][n]
            speed = run["backends"][base]["e2e_ms_median"] / r["e2e_ms_median"]
            lines.append(
                f"| {n} | {r['e2e_ms_median']:.1f} | {r['e2e_ms_min']:.1f} | "
                f"{r['e2e_ms_max']:.1f} | {100 * r['e2e_spread']:.0f}% | {speed:.2f}x |"
            )
        lines.append("")
        head = ["scale", "pn", "l", "past", *(f"{n} ms" for n in names), *ratio_keys]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for sc in run["scales"]:
            si = sc["si"]
            cells = [
                si,
                sc["pn"],
                sc["l"],
                sc["past_len"],
                *(f"{run['backends'][n]['step_ms_median'][si]:.3f}" for n in names),
                *(f"{run['ratios'][k]['step'][si]:.2f}" for k in ratio_keys),
            ]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        for label, key, ratio in (
            ("end-to-end ms", "e2e_ms_median", "e2e"),
            ("images/s", "images_per_s", "images_per_s"),
        ):
            cells = [
                label,
                "",
                "",
                "",
                *(f"{run['backends'][n][key]:.2f}" for n in names),
                *(f"{run['ratios'][k][ratio]:.2f}" for k in ratio_keys),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if run.get("roofline"):
            lines += ["", f"### batch {run['batch']} against the machine's limit", ""]
            lines += roofline_markdown(run["roofline"])
    if result.get("roofline"):
        lines += ["", roofline_note(result["roofline"])]
    sizes = s.get("step_graph_bytes") or {}
    if sizes:
        lines += ["", "## Step graph size on disk", "", "| backend | MB |", "|---|---|"]
        lines += [f"| {k} | {v / 1e6:.2f} |" for k, v in sizes.items()]
    if result.get("gemm_peak"):
        lines += [
            "",
            "## Plain MatMuls of the model's GEMM shapes (machine peak)",
            "",
            "| GEMM | M | K | N | int8 GOP/s | fp32 GOP/s | int8/fp32 |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {g['name']} | {g['M']} | {g['K']} | {g['N']} | {g['int8_gops']:.0f} | "
            f"{g['fp32_gops']:.0f} | {g['int8_over_fp32']:.2f} |"
            for g in result["gemm_peak"]["shapes"]
        ]
    if m.get("peak_rss_mb"):
        lines += ["", f"Peak RSS of the bench process: {m['peak_rss_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"
