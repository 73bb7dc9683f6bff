"""torch -> ONNX: the graphs of one VAR model, written to a folder with a manifest.

Layout of an export folder (all graphs fp32, standard ONNX ops only, no custom domains):

- ``start.onnx``    label_2B -> mod_BMC (every AdaLN modulation, once per image), x_BlC
- ``step.onnx``     x_BlC, mod_BMC, past_key_i/past_value_i -> logits, present_key_i/value_i
- ``next_{si}.onnx`` idx_Bl, f_hat -> f_hat_out (+ x_BlC of scale si+1, CFG-doubled)
- ``next_soft_{si}.onnx`` the same from codebook weights soft_BlV (``more_smooth`` sampling)
- ``decoder.onnx``  f_hat -> image in [-1, 1]
- ``manifest.json`` shapes, names, versions, config, sha256 of every file

One step graph serves every scale: its batch (``B2`` = 2B), new-token (``l``) and past (``P``)
axes are dynamic, so the weights are stored once (a per-scale set would store VAR-d16's
1.2 GB ten times) and each runtime feeds the static shapes of each scale, listed in the
manifest (TensorRT gets one optimization profile per scale). Scale 0 has no past: it is fed
as zero-length tensors (2B, H, 0, c), which ONNX Runtime accepts (Concat with an empty input;
tested), so the step graph has no special first-scale variant.

The transition graphs are small and per scale with static spatial shapes; their resampling
is done by constant matrices (``sasq.exporter.modules``).

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript's torchlib, the
default and maintained path); its output is an onnx-ir model that onnxscript's optimizer
folds in place and its rewriter rids of Expands before broadcasting ops, before saving. The
legacy TorchScript exporter is ~8x faster on the tiny model but deprecated. Attention comes
out as the model writes it: MatMul -> Softmax -> MatMul with the scale on the query side (no
SDPA, nothing fused).
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import onnx
import onnx_ir as ir
import onnxscript
import onnxscript.optimizer
import onnxscript.rewriter
import torch
from onnxscript.optimizer import FOLDED_FROM_KEY
from onnxscript.rewriter.rules.common import expand_before_binary_op_rules
from torch import nn

import sasq
from sasq import progress
from sasq.exporter import provenance
from sasq.exporter.config import ExportConfig, StepDtype
from sasq.exporter.manifest import (
    GraphSpec,
    Manifest,
    ScaleShapes,
    TensorSpec,
    file_entries,
    fp32_cache,
    step_io_names,
    write_manifest,
)
from sasq.exporter.modules import Decoder, NextScale, Start, Step
from sasq.exporter.out_swap import staged_export
from sasq.exporter.step_fp16 import write_fp16_step
from sasq.models import LoadedModel
from sasq.models.memory import export_estimate, require_fits

EXPORTER = "torch.onnx.export(dynamo=True)"
_CACHE_DTYPE = {StepDtype.FP32: "FLOAT", StepDtype.FP16: "FLOAT16"}


def export_model(
    model: LoadedModel,
    out_dir: str | Path,
    cfg: ExportConfig | None = None,
    notes: dict[str, Any] | None = None,
) -> Manifest:
    """Export every graph of ``model`` to ``out_dir``; return the written manifest.
    ``notes`` go to the manifest's ``extra`` (e.g. what GPS did to the weights); the
    model's fingerprint goes there too (``provenance``), unless ``notes`` bring their own
    (GPS: the model before its weights were rewritten).

    The folder is built under a temporary name beside ``out_dir`` and swapped into place
    at the end (``out_swap``), so a failure leaves nothing half-written. Only an export
    holding nothing but its listed files is replaced; anything else there is refused.
    """
    cfg = cfg or ExportConfig()
    require_fits(
        export_estimate(model.cfg), "exporting this model", "export it on a larger machine"
    )
    notes = {provenance.KEY: provenance.model_fingerprint(model), **(notes or {})}
    with staged_export(Path(out_dir)) as tmp:
        model.var.eval()
        model.vqvae.eval()
        plan = list(_plan(model, cfg))
        graphs = {}
        with progress.bar(None, "export", len(plan) + 1, cfg.progress) as bar:
            for g in plan:  # the step graph takes most of the time: name what runs

                def phase(what: str, name: str = g.name) -> None:
                    bar.set_postfix_str(f"{name}.onnx: {what}")

                graphs[g.name] = _export_graph(g, tmp / f"{g.name}.onnx", cfg, phase)
                if g.name == "step" and cfg.dtype == StepDtype.FP16:
                    phase("fp16")
                    notes = {**notes, "fp16": write_fp16_step(tmp / "step.onnx", graphs["step"])}
                    graphs["step"] = graph_spec(tmp / "step.onnx", graphs["step"].external_data)
                bar.update()
            bar.set_postfix_str("manifest (hashes, shapes)")
            manifest = _manifest(model, cfg, graphs, tmp)
            manifest.extra.update(notes)
            write_manifest(manifest, tmp)
            bar.update()
    return manifest


class _Graph(NamedTuple):
    name: str
    module: nn.Module
    args: tuple
    inputs: list[str]
    outputs: list[str]
    dynamic_shapes: dict | None


def _plan(model: LoadedModel, cfg: ExportConfig) -> Iterator[_Graph]:
    """The graphs of an export, each with example inputs and its dynamic axes."""
    var, q = model.var, model.vqvae.quantize
    pns, SN, H = var.patch_nums, len(var.patch_nums), var.patch_nums[-1]
    nh, hd = var.cfg.num_heads, var.C // var.cfg.num_heads
    dyn = cfg.dynamic_batch
    B = 2 if dyn else cfg.batch_size  # torch.export specializes sizes 0 and 1: trace with 2
    Bd = torch.export.Dim("B", min=1) if dyn else None
    B2d = torch.export.Dim("B2", min=2) if dyn else None

    def batch(*names: str) -> dict | None:
        return {n: {0: Bd} for n in names} if dyn else None

    label = torch.arange(2 * B) % (var.num_classes + 1)
    start_dyn = {"label_2B": {0: B2d}} if dyn else None
    yield _Graph("start", Start(model), (label,), ["label_2B"], ["mod_BMC", "x_BlC"], start_dyn)

    l_ex, P_ex = 4, 5  # example sizes only; both axes are symbolic
    x = torch.randn(2 * B, l_ex, var.C)
    mod = torch.randn(2 * B, 6 * var.depth + 2, var.C)
    past = tuple(torch.randn(2 * B, nh, P_ex, hd) for _ in range(2 * var.depth))
    l_dim, P_dim = torch.export.Dim("l", min=1), torch.export.Dim("P", min=0)
    step_dyn = {
        "x_BlC": {0: B2d, 1: l_dim} if dyn else {1: l_dim},
        "mod_BMC": {0: B2d} if dyn else None,
        "past": tuple(({0: B2d, 2: P_dim} if dyn else {2: P_dim}) for _ in past),
    }
    step_in, step_out = step_io_names(var.depth)
    yield _Graph("step", Step(model), (x, mod, *past), step_in, step_out, step_dyn)

    batch_args = ({0: Bd}, {0: Bd}) if dyn else None  # by position: the two share forward()
    for si, pn in enumerate(pns):
        idx = torch.randint(0, q.vocab_size, (B, pn * pn))
        f_hat = torch.randn(B, q.Cvae, H, H)
        outs = ["f_hat_out"] if si == SN - 1 else ["f_hat_out", "x_BlC"]
        yield _Graph(
            f"next_{si}",
            NextScale(model, si),
            (idx, f_hat),
            ["idx_Bl", "f_hat"],
            outs,
            batch_args,
        )
        if cfg.more_smooth:
            soft = torch.rand(B, pn * pn, q.vocab_size).softmax(-1)
            yield _Graph(
                f"next_soft_{si}",
                NextScale(model, si, soft=True),
                (soft, f_hat),
                ["soft_BlV", "f_hat"],
                outs,
                batch_args,
            )

    f_hat = torch.randn(B, q.Cvae, H, H)
    yield _Graph("decoder", Decoder(model), (f_hat,), ["f_hat"], ["image"], batch("f_hat"))


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress prints, warnings and registry log lines."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _recorded(cfg: ExportConfig) -> dict:
    """The settings that shape the graphs (not how the export showed its progress)."""
    return {k: v for k, v in asdict(cfg).items() if k != "progress"}


def _export_graph(
    g: _Graph, path: Path, cfg: ExportConfig, phase: Callable[[str], None] = lambda _: None
) -> GraphSpec:
    """Export, optimize, save (inline or external data), infer shapes, check; return the spec.
    ``phase`` hears each step's name (the progress bar shows it: tracing the step graph
    alone takes most of an export)."""
    phase("trace")
    with torch.no_grad(), _quiet():
        program = torch.onnx.export(
            g.module.eval(),
            g.args,
            dynamo=True,
            dynamic_shapes=g.dynamic_shapes,
            input_names=g.inputs,
            output_names=g.outputs,
            opset_version=cfg.opset,
            optimize=False,
            verbose=False,
        )
    model = program.model
    if cfg.optimize:
        phase("optimize")
        shapes = {name: v.shape for name, v in model.graph.initializers.items()}
        onnxscript.optimizer.optimize(model)
        # F.normalize exports as x / Expand(norm): an Expand the Div's broadcasting makes
        # redundant, one full-size copy per block and step (54 ms of VAR-d16's int8 step).
        model = onnxscript.rewriter.rewrite(
            model, pattern_rewrite_rules=expand_before_binary_op_rules
        )
        _name_folded_weights(model, shapes)
    model.producer_name, model.producer_version = "sasq", sasq.__version__
    model.graph.name = path.stem
    nbytes = sum(
        v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None
    )
    external = f"{path.name}.data" if nbytes > cfg.external_data_threshold else None
    phase("save and check")
    if external is None:
        ir.save(model, path)
    else:
        ir.save(model, path, external_data=external)
    onnx.shape_inference.infer_shapes_path(str(path), check_type=True, strict_mode=True)
    if cfg.check:
        onnx.checker.check_model(str(path), full_check=True)
    return graph_spec(path, external)


def _name_folded_weights(model: ir.Model, before: dict[str, ir.Shape | None]) -> None:
    """Name each weight that constant folding made from one parameter after it: ``W.T`` for
    a Linear weight stored transposed ([K, N] for MatMul), not ``val_57``, so graph passes,
    calibration caches and Netron can tell which layer a MatMul belongs to."""
    for v in list(model.graph.initializers.values()):
        folded = v.metadata_props.get(FOLDED_FROM_KEY)
        sources = ast.literal_eval(folded) if folded else []
        if len(sources) != 1 or sources[0] not in before or sources[0] in model.graph.initializers:
            continue
        src_shape = before[sources[0]]
        transposed = v.shape is not None and src_shape is not None and len(v.shape) == 2
        transposed = transposed and tuple(v.shape) == tuple(reversed(tuple(src_shape)))
        name = f"{sources[0]}.T" if transposed else f"{sources[0]}.folded"
        if name not in model.graph.initializers:
            v.name = name


def graph_spec(path: Path, external: str | None) -> GraphSpec:
    """The inputs and outputs of a saved graph, as the manifest lists them."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(v: onnx.ValueInfoProto) -> TensorSpec:
        t = v.type.tensor_type
        shape = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim)
        return TensorSpec(v.name, onnx.TensorProto.DataType.Name(t.elem_type), shape)

    return GraphSpec(
        path.name, tuple(map(spec, graph.input)), tuple(map(spec, graph.output)), external
    )


def _manifest(model: LoadedModel, cfg: ExportConfig, graphs: dict[str, GraphSpec], folder: Path):
    var, vae = model.var, model.cfg.vqvae
    pns = var.patch_nums
    step_batch: str | int = "B2" if cfg.dynamic_batch else 2 * cfg.batch_size
    scales, past = [], 0
    for si, pn in enumerate(pns):
        soft = f"next_soft_{si}.onnx" if cfg.more_smooth else None
        scales.append(ScaleShapes(si, pn, pn * pn, past, step_batch, f"next_{si}.onnx", soft))
        past += pn * pn
    dims = dict(
        depth=var.depth,
        num_heads=var.cfg.num_heads,
        head_dim=var.C // var.cfg.num_heads,
        embed_dim=var.C,
        cond_dim=var.D,
        modulation_rows=6 * var.depth + 2,  # mod_BMC: six AdaLN rows per block, two for the head
        vocab_size=var.V,
        num_classes=var.num_classes,
        Cvae=var.Cvae,
        latent_hw=pns[-1],
        image_size=vae.image_size,
        image_channels=vae.in_channels,
    )
    return Manifest(
        patch_nums=tuple(pns),
        opset=cfg.opset,
        exporter=EXPORTER,
        dynamic_batch=cfg.dynamic_batch,
        batch_size=None if cfg.dynamic_batch else cfg.batch_size,
        dims=dims,
        scales=tuple(scales),
        graphs=graphs,
        files=file_entries(folder),
        versions=_versions(),
        model_config=json.loads(model.cfg.to_json()),
        extra={"export_config": json.loads(json.dumps(_recorded(cfg)))},
        cache=fp32_cache(dims, tuple(s.past_len for s in scales), _CACHE_DTYPE[cfg.dtype]),
    )


def _versions() -> dict[str, str]:
    import onnxruntime

    return {
        "sasq": sasq.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "onnx_ir": ir.__version__,
        "python": sys.version.split()[0],
    }
