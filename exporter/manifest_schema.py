"""Field-by-field check of a ``manifest.json`` read from disk, before anything uses it.

An export folder may come from a stranger, and the manifest itself is not covered by any
hash, so every field is checked for its type and range where it enters: file names are
plain names inside the folder (``plain_names``) and listed under ``files``; the per-scale
shapes follow ``patch_nums``; ``dims`` agree with ``model_config`` (ONNX Runtime buffers are
allocated from them); the model config passes ``sasq.models.validate``. The first problem
found is reported in one line: ``<path>: invalid manifest (<field>: <why>)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sasq.errors import UserError
from sasq.plain_names import is_plain_name

# Patch grids beyond this are not a VAR anyone can run (the official 512 px model has 32).
MAX_PATCH = 1024
MAX_DIM = 1 << 20  # widths, vocabularies, class counts: far above any real model
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = (
    "patch_nums", "opset", "exporter", "dynamic_batch", "batch_size", "dims", "scales",
    "graphs", "files", "versions", "model_config", "format", "format_version",
)  # fmt: skip
# dims -> (section, field) of model_config they must equal
_DIMS_FROM_CONFIG = {
    "depth": ("var", "depth"),
    "embed_dim": ("var", "embed_dim"),
    "num_heads": ("var", "num_heads"),
    "num_classes": ("var", "num_classes"),
    "vocab_size": ("vqvae", "vocab_size"),
    "Cvae": ("vqvae", "z_channels"),
}


class _FieldError(Exception):
    """One problem with one field (becomes the UserError's parenthesis)."""


def _int(v: Any, where: str, lo: int = 0, hi: int = MAX_DIM) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _FieldError(f"{where}: expected an integer, got {type(v).__name__} {v!r:.40}")
    if not lo <= v <= hi:
        raise _FieldError(f"{where}: {v} is outside {lo}..{hi}")
    return v


def _typed(v: Any, t: type, where: str) -> Any:
    if not isinstance(v, t) or isinstance(v, bool) and t is not bool:
        shown = "" if isinstance(v, dict | list) else f" {v!r:.40}"  # a value, not a dump
        raise _FieldError(f"{where}: expected {t.__name__}, got {type(v).__name__}{shown}")
    return v


def _name(v: Any, where: str, files: dict) -> str:
    if not is_plain_name(v):
        raise _FieldError(f"{where}: {v!r:.60} is not a plain file name inside the folder")
    if v not in files:
        raise _FieldError(f"{where}: {v} is not listed under files")
    return v


def check_format(d: Any) -> None:
    """The format and version fields (enough to know whether this is a sasq export)."""
    from sasq.exporter.manifest import FORMAT, FORMAT_VERSION

    _typed(d, dict, "top level")
    if d.get("format") != FORMAT:
        raise _FieldError(f"format is {d.get('format')!r:.40}, expected {FORMAT!r}")
    v = d.get("format_version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _FieldError(
            f"format_version is {type(v).__name__} {v!r:.20}, expected the integer {FORMAT_VERSION}"
        )
    if v != FORMAT_VERSION:
        raise _FieldError(f"format_version {v} is not {FORMAT_VERSION}; export again")


def _files(d: dict) -> dict:
    files = _typed(d["files"], dict, "files")
    for name, entry in files.items():
        if not is_plain_name(name) or name == "manifest.json":
            raise _FieldError(f"files: {name!r:.60} is not a plain file name inside the folder")
        _typed(entry, dict, f"files.{name}")
        if set(entry) != {"sha256", "bytes"}:
            raise _FieldError(f"files.{name}: expected keys sha256 and bytes, got {sorted(entry)}")
        if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
            raise _FieldError(f"files.{name}.sha256: not a lowercase hex sha256")
        _int(entry["bytes"], f"files.{name}.bytes", 0, 1 << 50)
    return files


def _tensor_specs(v: Any, where: str) -> None:
    for i, t in enumerate(_typed(v, list, where)):
        w = f"{where}[{i}]"
        _typed(t, dict, w)
        if set(t) != {"name", "dtype", "shape"}:
            raise _FieldError(f"{w}: expected keys name, dtype, shape, got {sorted(t)}")
        _typed(t["name"], str, f"{w}.name")
        _typed(t["dtype"], str, f"{w}.dtype")
        for dim in _typed(t["shape"], list, f"{w}.shape"):
            if not isinstance(dim, str):
                _int(dim, f"{w}.shape", 0, 1 << 40)


def _step_graphs(d: dict) -> None:
    """Each scale's ``step_graph`` (default "step"): a key of ``graphs`` whose inputs and
    outputs are the step graph's, names, types and shapes (the backends carry one cache
    from graph to graph)."""
    graphs = d["graphs"]
    for si, s in enumerate(d["scales"]):
        key = s.get("step_graph", "step")
        w = f"scales[{si}].step_graph"
        if not isinstance(key, str) or key not in graphs:
            raise _FieldError(f"{w}: {key!r:.40} is not a key of graphs")
        for part in ("inputs", "outputs"):
            if graphs[key][part] != graphs["step"][part]:
                raise _FieldError(f"{w}: graphs.{key}.{part} differ from graphs.step.{part}")


def _graphs(d: dict, files: dict, n_scales: int) -> None:
    graphs = _typed(d["graphs"], dict, "graphs")
    need = {"start", "step", "decoder", *(f"next_{i}" for i in range(n_scales))}
    if missing := sorted(need - set(graphs)):
        raise _FieldError(f"graphs: missing {', '.join(missing)}")
    for key, g in graphs.items():
        w = f"graphs.{key}"
        _typed(g, dict, w)
        if not {"file", "inputs", "outputs"} <= set(g) <= {"file", "inputs", "outputs",
                                                           "external_data"}:  # fmt: skip
            raise _FieldError(f"{w}: expected keys file, inputs, outputs[, external_data]")
        _name(g["file"], f"{w}.file", files)
        if g.get("external_data") is not None:
            _name(g["external_data"], f"{w}.external_data", files)
        _tensor_specs(g["inputs"], f"{w}.inputs")
        _tensor_specs(g["outputs"], f"{w}.outputs")


def _scales(d: dict, pns: list[int], files: dict) -> None:
    scales = _typed(d["scales"], list, "scales")
    if len(scales) != len(pns):
        raise _FieldError(f"scales: {len(scales)} entries for {len(pns)} patch_nums")
    step_batch = "B2" if d["dynamic_batch"] else 2 * d["batch_size"]
    past = 0
    for si, s in enumerate(scales):
        w = f"scales[{si}]"
        _typed(s, dict, w)
        want = {"si", "pn", "l", "past_len", "step_batch", "next_graph"}
        if not want <= set(s) <= want | {"next_soft_graph", "step_graph"}:
            raise _FieldError(
                f"{w}: expected keys {', '.join(sorted(want))}[, next_soft_graph, step_graph], "
                f"got {sorted(s)}"
            )
        pn = pns[si]
        expect = {"si": si, "pn": pn, "l": pn * pn, "past_len": past, "step_batch": step_batch}
        for k, v in expect.items():
            if s[k] != v or type(s[k]) is not type(v):
                why = f"{s[k]!r:.20} does not follow patch_nums (expected {v!r})"
                raise _FieldError(f"{w}.{k}: {why}")
        _name(s["next_graph"], f"{w}.next_graph", files)
        if s.get("next_soft_graph") is not None:
            _name(s["next_soft_graph"], f"{w}.next_soft_graph", files)
        past += pn * pn


# The cache's element types: float (an FP export, fp32 or fp16) or quantized (with a scale).
CACHE_DTYPES = ("FLOAT", "FLOAT16", "INT8", "FLOAT8E4M3FN")
QUANTIZED_CACHE = ("INT8", "FLOAT8E4M3FN")
_CACHE_KEYS = {"input", "output", "dtype", "shape", "axis", "past_lens", "scale"}


def _cache(d: dict, pns: list[int]) -> None:
    """The step graph's state tensors (absent: the FP32 cache of older exports). An int8
    cache's scale becomes a division in every backend: finite and positive, or garbage."""
    for i, c in enumerate(_typed(d.get("cache", []), list, "cache")):
        w = f"cache[{i}]"
        _typed(c, dict, w)
        if set(c) != _CACHE_KEYS:
            raise _FieldError(f"{w}: expected keys {', '.join(sorted(_CACHE_KEYS))}")
        _typed(c["input"], str, f"{w}.input")
        _typed(c["output"], str, f"{w}.output")
        if c["dtype"] not in CACHE_DTYPES:
            raise _FieldError(f"{w}.dtype: {c['dtype']!r:.20} is not {', '.join(CACHE_DTYPES)}")
        shape = _typed(c["shape"], list, f"{w}.shape")
        for dim in shape:
            if not isinstance(dim, str):
                _int(dim, f"{w}.shape", 0, 1 << 40)
        _int(c["axis"], f"{w}.axis", 1, max(1, len(shape) - 1))
        lens = _typed(c["past_lens"], list, f"{w}.past_lens")
        if len(lens) != len(pns):
            raise _FieldError(f"{w}.past_lens: expected {len(pns)} lengths, got {len(lens)}")
        for n in lens:  # shift-and-sum copies grow otherwise than the tokens: ORT checks them
            _int(n, f"{w}.past_lens", 0, 1 << 40)
        if c["scale"] is None:
            if c["dtype"] in QUANTIZED_CACHE:
                raise _FieldError(f"{w}.scale: an {c['dtype']} cache needs its scale")
            continue
        scale = c["scale"]
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise _FieldError(f"{w}.scale: expected a number, got {type(scale).__name__}")
        if not 1e-30 < scale < 1e30:  # also false for NaN
            raise _FieldError(f"{w}.scale: {scale!r:.20} is not a finite positive scale")


def _dims(d: dict, pns: list[int]) -> None:
    dims = _typed(d["dims"], dict, "dims")
    for k, v in dims.items():
        _int(v, f"dims.{k}", 1)
    need = {"depth", "num_heads", "head_dim", "embed_dim", "Cvae", "latent_hw", "vocab_size"}
    if missing := sorted(need - set(dims)):
        raise _FieldError(f"dims: missing {', '.join(missing)}")
    if dims["latent_hw"] != pns[-1]:
        why = f"{dims['latent_hw']} is not the last patch_num {pns[-1]}"
        raise _FieldError(f"dims.latent_hw: {why}")
    if dims["num_heads"] * dims["head_dim"] != dims["embed_dim"]:
        raise _FieldError("dims: num_heads x head_dim is not embed_dim")
    mc = d["model_config"]
    for k, (section, field) in _DIMS_FROM_CONFIG.items():
        want = mc.get(section, {}).get(field)
        if k in dims and want is not None and dims[k] != want:
            why = f"{dims[k]} disagrees with model_config.{section}.{field} {want}"
            raise _FieldError(f"dims.{k}: {why}")


def _model_config(d: dict) -> list[int]:
    from sasq.models.config import ModelConfig

    mc = _typed(d["model_config"], dict, "model_config")
    for section in ("vqvae", "var", "sampling"):
        _typed(mc.get(section, {}), dict, f"model_config.{section}")
    try:
        cfg = ModelConfig.from_dict(mc)
    except (ValueError, TypeError) as e:
        raise _FieldError(f"model_config: {e}") from None
    return list(cfg.var.patch_nums)


def _check(d: Any) -> None:
    check_format(d)
    if missing := [k for k in _REQUIRED if k not in d]:
        raise _FieldError(f"missing {', '.join(missing)}")
    pns = _typed(d["patch_nums"], list, "patch_nums")
    if not pns:
        raise _FieldError("patch_nums: empty")
    for i, pn in enumerate(pns):
        _int(pn, f"patch_nums[{i}]", 1, MAX_PATCH)
    if any(b <= a for a, b in zip(pns, pns[1:], strict=False)):
        raise _FieldError("patch_nums: not strictly increasing")
    _int(d["opset"], "opset", 7, 99)
    _typed(d["exporter"], str, "exporter")
    _typed(d["dynamic_batch"], bool, "dynamic_batch")
    if d["dynamic_batch"]:
        if d["batch_size"] is not None:
            raise _FieldError("batch_size: must be null with a dynamic batch")
    else:
        _int(d["batch_size"], "batch_size", 1)
    if _model_config(d) != pns:
        raise _FieldError("patch_nums: differ from model_config's")
    _dims(d, pns)
    files = _files(d)
    _scales(d, pns, files)
    _graphs(d, files, len(pns))
    _step_graphs(d)
    _cache(d, pns)
    for k, v in _typed(d["versions"], dict, "versions").items():
        _typed(v, str, f"versions.{k}")
    _typed(d.get("extra", {}), dict, "extra")


def validate_manifest(d: Any, path: str | Path) -> None:
    """``UserError`` (one line) naming the first field of ``d`` that is wrong."""
    try:
        _check(d)
    except _FieldError as e:
        raise UserError(f"{path}: invalid manifest ({e})") from None
