"""A TensorRT plan's sidecar: what the engine was built from and for, checked at load.

``sasq build --out e.plan`` writes one engine per step graph of the export (``e.plan``
for ``step``; ``e.<graph>.plan`` for another one, e.g. a long-sequence attention form) and
``e.plan.json`` beside them:

    {"format": "sasq-trt-plan", "format_version": 1, "simulated": false,
     "tensorrt": "10.9.0.34", "gpu": "NVIDIA H200",
     "batch": {"min": 1, "opt": 8, "max": 16},          # images; the step runs 2x rows
     "settings": {"builder_optimization_level": 3, "workspace_mb": 4096},
     "engines": {"step": {"file": "e.plan", "onnx": "step.onnx",
                          "onnx_sha256": "...", "scales": [0, 1, ..]}}}

Each engine holds one optimization profile per scale it serves (in ``scales`` order): the
scale fixes the new and cached token counts, the batch ranges over ``batch``. Loading
refuses, in one line, a plan built from other weights (the step graph's sha256), by
another TensorRT or for another GPU, and a batch outside its range: TensorRT would fail
at ``set_input_shape`` deep inside a generation instead.

The file is input from a stranger: every field is checked where it enters, and every
engine file is a plain name beside the sidecar.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sasq.errors import UserError
from sasq.exporter.manifest import Manifest
from sasq.plain_names import is_plain_name

FORMAT = "sasq-trt-plan"
FORMAT_VERSION = 1
MAX_SIDECAR_BYTES = 1 << 20  # a real sidecar is a few hundred bytes per scale


@dataclass(frozen=True)
class BatchRange:
    """Images per generation batch the engine's profiles cover (the step runs 2x rows)."""

    min: int = 1
    opt: int = 8
    max: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max <= 4096:
            raise UserError(
                f"batch range must satisfy 1 <= min <= opt <= max <= 4096, got "
                f"{self.min}:{self.opt}:{self.max}"
            )

    @classmethod
    def parse(cls, text: str, opt: int | None = None) -> BatchRange:
        """``MIN:MAX`` (opt: ``opt``, else 8 clipped into the range) or ``MIN:OPT:MAX``."""
        parts = text.split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) not in (2, 3):
            raise UserError(
                f"`batch_range` {text!r}: expected MIN:MAX or MIN:OPT:MAX", param="batch_range"
            )
        lo, hi = nums[0], nums[-1]
        mid = nums[1] if len(nums) == 3 else opt if opt is not None else min(max(8, lo), hi)
        return cls(lo, mid, hi)

    def check(self, batch: int, where: str) -> None:
        if not self.min <= batch <= self.max:
            raise UserError(
                f"{where}: the TensorRT plan covers batches of {self.min}..{self.max} images, "
                f"got {batch}: use a batch in that range or rebuild the plan with a "
                f"`batch_range` MIN:MAX that covers it",
                param="batch_range",
            )

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class EngineEntry:
    file: str  # plan file beside the sidecar
    onnx: str  # the step graph's file in the export folder
    onnx_sha256: str
    scales: tuple[int, ...]  # profile i serves scale scales[i]


@dataclass(frozen=True)
class PlanInfo:
    tensorrt: str
    gpu: str
    batch: BatchRange
    settings: dict
    engines: dict[str, EngineEntry]  # step graph key -> its engine
    simulated: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["engines"] = {k: asdict(e) | {"scales": list(e.scales)} for k, e in self.engines.items()}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}


def sidecar_path(plan: Path) -> Path:
    return plan.with_name(plan.name + ".json")


def engine_file(plan: Path, graph: str) -> Path:
    """``e.plan`` for the step graph, ``e.<graph>.plan`` for any other."""
    return plan if graph == "step" else plan.with_name(f"{plan.stem}.{graph}{plan.suffix}")


def step_graphs(manifest: Manifest) -> dict[str, tuple[int, ...]]:
    """Step graph key -> the scales it runs (an export may run its last, long scales on
    another attention form, ``ScaleShapes.step_graph``)."""
    out: dict[str, list[int]] = {}
    for s in manifest.scales:
        out.setdefault(s.step_graph, []).append(s.si)
    return {k: tuple(v) for k, v in out.items()}


def scale_shapes(manifest: Manifest, rows: int, si: int) -> dict[str, tuple[int, ...]]:
    """Input shapes of the step graph at scale si with ``rows`` step rows (2 x images)."""
    d, s = manifest.dims, manifest.scales[si]
    shape = {
        "x_BlC": (rows, s.l, d["embed_dim"]),
        "mod_BMC": (rows, d["modulation_rows"], d["embed_dim"]),
    }
    return shape | {c.input: c.shape_at(si, rows) for c in manifest.step_cache()}


def profile_shapes(manifest: Manifest, batch: BatchRange, si: int) -> dict[str, tuple]:
    """name -> (min, opt, max) shapes of scale si's profile: only the rows vary."""
    lo, mid, hi = (scale_shapes(manifest, 2 * b, si) for b in (batch.min, batch.opt, batch.max))
    return {name: (lo[name], mid[name], hi[name]) for name in lo}


def load_plan_info(plan: Path) -> PlanInfo:
    """Read and check ``<plan>.json``; ``UserError`` naming the file on any problem."""
    side = sidecar_path(plan)
    try:
        if side.stat().st_size > MAX_SIDECAR_BYTES:
            raise UserError(f"{side}: too large for a plan sidecar")
        d = json.loads(side.read_text())
    except FileNotFoundError:
        raise UserError(f"{plan}: no {side.name} beside it (build it with sasq build)") from None
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{side}: not a readable plan sidecar ({type(e).__name__})") from None
    try:
        return _parse(d)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{side}: not a sasq plan sidecar ({e}); rebuild the plan") from None


def _str(v) -> str:
    if not isinstance(v, str) or len(v) > 512:
        raise ValueError(f"expected a short string, got {type(v).__name__}")
    return v


def _int(v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def _parse(d: dict) -> PlanInfo:
    if not isinstance(d, dict):
        raise ValueError(f"expected an object, got {type(d).__name__}")
    if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format {d.get('format')!r} v{d.get('format_version')!r}")
    if not isinstance(d.get("engines"), dict) or not isinstance(d.get("batch"), dict):
        raise ValueError("engines and batch must be objects")
    b = d["batch"]
    try:
        batch = BatchRange(*(_int(b[k], 1, 4096) for k in ("min", "opt", "max")))
    except UserError as e:
        raise ValueError(str(e)) from None
    engines = {}
    for key, e in d["engines"].items():
        if not is_plain_name(_str(e["file"])):
            raise ValueError(f"engine file {e['file']!r} is not a plain name beside the sidecar")
        engines[_str(key)] = EngineEntry(
            _str(e["file"]),
            _str(e["onnx"]),
            _str(e["onnx_sha256"]),
            tuple(_int(s, 0, 1024) for s in e["scales"]),
        )
    settings = d["settings"]
    if not isinstance(settings, dict):
        raise ValueError("settings: expected an object")
    simulated = d.get("simulated", False)
    if not isinstance(simulated, bool):
        raise ValueError("simulated: expected true or false")
    return PlanInfo(_str(d["tensorrt"]), _str(d["gpu"]), batch, settings, engines, simulated)


def check_plan(info: PlanInfo, plan: Path, manifest: Manifest, runtime: tuple[str, str]) -> None:
    """Refuse a plan that was not built from this export, by this TensorRT, for this GPU."""
    want = step_graphs(manifest)
    if set(info.engines) != set(want):
        raise UserError(
            f"{plan}: built for step graphs {sorted(info.engines)}, the export has "
            f"{sorted(want)}: rebuild with sasq build --rebuild"
        )
    for key, e in info.engines.items():
        spec = manifest.graphs[key]
        entry = manifest.files.get(spec.file)
        if e.onnx != spec.file or entry is None or entry.sha256 != e.onnx_sha256:
            raise UserError(
                f"{plan}: built from another {spec.file} (other weights or another "
                "quantization): rebuild with sasq build --rebuild"
            )
        if e.scales != want[key]:
            raise UserError(f"{plan}: its {key} engine serves scales {e.scales}, not {want[key]}")
    trt_version, gpu = runtime
    if info.tensorrt != trt_version:
        raise UserError(
            f"{plan}: built by TensorRT {info.tensorrt}, this is {trt_version}: "
            "rebuild with sasq build --rebuild"
        )
    if info.gpu != gpu:
        raise UserError(f"{plan}: built for {info.gpu}, this GPU is {gpu}: rebuild it here")
