"""``manifest.json`` of an export folder: what each graph takes and returns, per-scale shapes,
versions, the model config, and the sha256 of every file, so a runtime can refuse a folder
that is incomplete or was changed after export."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sasq.errors import UserError
from sasq.exporter.manifest_schema import validate_manifest
from sasq.files import sha256_file, write_text
from sasq.plain_names import check_external_data, inside
from sasq.untrusted import json_loads, read_capped

MANIFEST = "manifest.json"
FORMAT = "sasq-onnx-export"
# 2: the step takes mod_BMC (every AdaLN modulation, made once per image by start.onnx)
# instead of cond_BD; a version-1 export must be exported again.
FORMAT_VERSION = 2
MAX_MANIFEST_BYTES = 64 << 20  # a real one is kilobytes; refuse before reading a huge file


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # ONNX element type name, e.g. "FLOAT", "INT64"
    shape: tuple[int | str, ...]  # ints are static, strings are symbolic dims


@dataclass(frozen=True)
class GraphSpec:
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    external_data: str | None = None  # file beside the graph holding its weights, if any


@dataclass(frozen=True)
class ScaleShapes:
    """Shapes of scale si: ``l`` new tokens attend to ``past_len`` cached ones."""

    si: int
    pn: int
    l: int
    past_len: int
    step_batch: str | int  # rows of the step graph: "B2" (= 2B, CFG) or a fixed number
    next_graph: str
    # The more_smooth variant (soft_BlV in place of idx_Bl); None in exports without it,
    # which is also how a manifest written before it reads.
    next_soft_graph: str | None = None
    # The key under ``graphs`` of the step graph that runs this scale (same inputs, outputs
    # and cache as "step"): a TensorRT export whose attention form differs by scale
    # (``attention_form``) names "step_long" for the scales int8 attention cannot fuse.
    step_graph: str = "step"


@dataclass(frozen=True)
class CacheTensor:
    """One state tensor the step graph carries from scale to scale: fed as ``input``,
    returned grown by this scale's tokens as ``output``. ``shape`` is its symbolic shape
    (``B2`` rows, the growing axis named ``P``); ``past_lens[si]`` is its length along
    ``axis`` when scale si starts. ``scale``: the dequantization scale of an int8 cache."""

    input: str
    output: str
    dtype: str  # ONNX element type name: "FLOAT", "FLOAT16", "INT8", "FLOAT8E4M3FN"
    shape: tuple[int | str, ...]
    axis: int
    past_lens: tuple[int, ...]
    scale: float | None = None

    def shape_at(self, si: int, rows: int) -> tuple[int, ...]:
        """The concrete shape fed at scale si with ``rows`` step rows (2 x images)."""
        dims = [rows if i == 0 else int(d) if isinstance(d, int) else 0
                for i, d in enumerate(self.shape)]  # fmt: skip
        dims[self.axis] = self.past_lens[si]
        return tuple(dims)


def fp32_cache(
    dims: dict[str, int], past_lens: tuple[int, ...], dtype: str = "FLOAT"
) -> tuple[CacheTensor, ...]:
    """The KV cache of an FP export: per layer K and V, float32 (B2, H, P, head_dim), or
    ``dtype`` ("FLOAT16": an export made with ``--dtype fp16``)."""
    shape = ("B2", dims["num_heads"], "P", dims["head_dim"])
    past, present = step_io_names(dims["depth"])
    return tuple(
        CacheTensor(i, o, dtype, shape, 2, past_lens)
        for i, o in zip(past[2:], present[1:], strict=True)
    )


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    patch_nums: tuple[int, ...]
    opset: int
    exporter: str
    dynamic_batch: bool
    batch_size: int | None  # images per batch when the batch is static, else None
    dims: dict[str, int]  # depth, num_heads, head_dim, embed_dim, vocab_size, Cvae, ...
    scales: tuple[ScaleShapes, ...]
    graphs: dict[str, GraphSpec]  # "start", "step", "next_0".., "decoder"
    files: dict[str, FileEntry]  # every file of the folder except the manifest
    versions: dict[str, str]
    model_config: dict[str, Any]
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # The step graph's state between scales; empty in manifests written before it was
    # recorded, which all carry the FP32 cache (``step_cache`` fills it in).
    cache: tuple[CacheTensor, ...] = ()

    def step_cache(self) -> tuple[CacheTensor, ...]:
        """The cache tensors of the step graph, in input order."""
        return self.cache or fp32_cache(self.dims, tuple(s.past_len for s in self.scales))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        def spec(t: dict) -> TensorSpec:
            return TensorSpec(t["name"], t["dtype"], tuple(t["shape"]))

        graphs = {
            k: GraphSpec(
                g["file"],
                tuple(map(spec, g["inputs"])),
                tuple(map(spec, g["outputs"])),
                g.get("external_data"),
            )
            for k, g in d["graphs"].items()
        }
        return cls(
            patch_nums=tuple(d["patch_nums"]),
            opset=d["opset"],
            exporter=d["exporter"],
            dynamic_batch=d["dynamic_batch"],
            batch_size=d["batch_size"],
            dims=dict(d["dims"]),
            scales=tuple(ScaleShapes(**s) for s in d["scales"]),
            graphs=graphs,
            files={k: FileEntry(**f) for k, f in d["files"].items()},
            versions=dict(d["versions"]),
            model_config=d["model_config"],
            format=d["format"],
            format_version=d["format_version"],
            extra=d.get("extra", {}),
            cache=tuple(
                CacheTensor(**{**c, "shape": tuple(c["shape"]), "past_lens": tuple(c["past_lens"])})
                for c in d.get("cache", ())
            ),
        )


def step_io_names(depth: int) -> tuple[list[str], list[str]]:
    """Input and output names of step.onnx, caches interleaved per layer (key, value)."""
    past = [f"past_{t}_{i}" for i in range(depth) for t in ("key", "value")]
    present = [f"present_{t}_{i}" for i in range(depth) for t in ("key", "value")]
    return ["x_BlC", "mod_BMC", *past], ["logits", *present]


def file_entries(folder: Path) -> dict[str, FileEntry]:
    """sha256 and size of every file in ``folder`` except the manifest, sorted by name."""
    return {
        p.name: FileEntry(sha256_file(p), p.stat().st_size)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write ``manifest.json`` atomically (``sasq.files``)."""
    return write_text(Path(folder) / MANIFEST, json.dumps(manifest.to_dict(), indent=2) + "\n")


def load_manifest(folder: str | Path) -> Manifest:
    """The manifest of an export folder; ``UserError`` if it is missing or unreadable."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder}: not a sasq ONNX export (no {MANIFEST})")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes, too large for a manifest")
    try:
        d = json_loads(read_capped(path, "manifest", MAX_MANIFEST_BYTES))
    except ValueError as e:  # invalid JSON or UTF-8, or nested too deeply to parse
        raise UserError(f"{path}: invalid manifest (not JSON: {e})") from None
    validate_manifest(d, path)  # every field's type and range, plain file names
    return Manifest.from_dict(d)


def verify(folder: str | Path) -> Manifest:
    """Check every file listed in the manifest against its sha256; return the manifest.

    Raises ``UserError`` with one line naming the first missing or changed file.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    used = [n for g in manifest.graphs.values() for n in (g.file, g.external_data)]
    used += [n for s in manifest.scales for n in (s.next_graph, s.next_soft_graph)]
    for name in used:
        if name is not None and name not in manifest.files:
            raise UserError(f"{folder / MANIFEST}: {name} is used but not listed")
    for name in manifest.files:
        if Path(name).name != name or name in (".", ".."):
            raise UserError(f"{folder / MANIFEST}: {name!r} is not a file name in the folder")
    for name, entry in manifest.files.items():
        p = inside(folder, name, folder / MANIFEST)
        if not p.is_file():
            raise UserError(f"{p}: missing from the export (listed in {MANIFEST})")
        if p.stat().st_size != entry.bytes or sha256_file(p) != entry.sha256:
            raise UserError(f"{p}: sha256 does not match {MANIFEST} (file changed after export)")
    for g in manifest.graphs.values():  # before onnx or ONNX Runtime follows a location
        check_external_data(folder / g.file, {g.external_data} - {None})
    return manifest
