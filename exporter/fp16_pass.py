"""fp32 graph -> the same graph with its float parts in fp16: ``Cast``s written by sasq, not
left to a builder flag.

Why: TensorRT 11 has no BuilderFlag FP16/INT8 and no weakly typed networks; every network
is strongly typed and takes its precision from the ONNX graph ("Migrating from TensorRT
10.x to 11.x: Strongly Typed Networks Are Now Required", docs.nvidia.com/deeplearning/
tensorrt/latest/api/migration/tensorrt-10x-to-11x.html). So the fp16 engine and the
"int8 + fp16 rest" engine need graphs whose tensors are fp16 (``export --dtype fp16``,
``quantize --rest fp16``); this pass writes them from the fp32 step graph, FP or Q/DQ.

What it does (an onnx-ir pass, in place on the IR; ``to_fp16`` wraps it for a ModelProto):
- every FLOAT tensor becomes FLOAT16: initializers (Q/DQ scales too, so DequantizeLinear
  outputs fp16 and QuantizeLinear quantizes fp16), node outputs, ``Cast(to=FLOAT)``;
- graph inputs/outputs named in ``fp32_io`` stay FLOAT behind a Cast (the step's x_BlC,
  mod_BMC and logits: the other graphs and the host sampler keep fp32); the other float
  I/O (an FP export's K/V cache) becomes FLOAT16; int8 tensors are untouched;
- nodes kept in fp32, each with its reason in the report, fed and read through Casts:
  * reductions (``keep_fp32_ops``): a sum of many fp16 terms loses bits and can overflow
    (ModelOpt AutoCast keeps deep reductions fp32 for the same reason, its
    ``max_depth_of_reduction``); here the l2 norms of q and k;
  * a node with a constant fp16 cannot hold: a value past 65504, a scalar that rounds to 0
    (the l2 norm's clamp at 1e-12), a Q/DQ scale below fp16's smallest normal 2^-14 (a
    subnormal scale would carry a few bits only);
  * nodes matched by ``keep_fp32_nodes`` globs.
- LayerNormalization stays fp16 with ``stash_type=1`` (the default): onnx-tensorrt's
  importer sets the normalization layer's compute precision from stash_type (FLOAT), so
  mean and variance are accumulated in fp32 on TensorRT; ONNX Runtime's CPU kernel
  likewise computes in float. Softmax stays fp16 so that MatMul -> Softmax -> MatMul is
  still the pattern TensorRT fuses into one attention kernel.

On ONNX Runtime's CPU EP (1.32) an fp16 node without a CPU fp16 kernel is run in fp32 by
ORT's own inserted casts (its InsertCastTransformer): products of fp16 values, summed in
fp32, rounded to fp16 per op. That is the reference the contract simulator runs; TensorRT's
fp16 GEMMs also accumulate in fp32, its elementwise ops may round differently.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from sasq.exporter.graph_types import value_types

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
REDUCTIONS = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMean", "ReduceProd",
    "ReduceSum", "ReduceSumSquare",
)  # fmt: skip
STEP_FP32_IO = ("x_BlC", "mod_BMC", "logits")
F32, F16 = ir.DataType.FLOAT, ir.DataType.FLOAT16
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Fp16Config:
    """keep_fp32_ops: op types run in fp32 (default: every reduction). keep_fp32_nodes:
    fnmatch globs of node names run in fp32. fp32_io: graph inputs/outputs that stay FLOAT."""

    keep_fp32_ops: tuple[str, ...] = REDUCTIONS
    keep_fp32_nodes: tuple[str, ...] = ()
    fp32_io: tuple[str, ...] = STEP_FP32_IO

    def __post_init__(self) -> None:
        for f in ("keep_fp32_ops", "keep_fp32_nodes", "fp32_io"):
            object.__setattr__(self, f, tuple(getattr(self, f)))


@dataclass
class Fp16Report:
    """kept_fp32: node -> why it runs in fp32; casts: Cast nodes added; io: each float graph
    input/output -> its element type after the pass."""

    kept_fp32: dict[str, str] = field(default_factory=dict)
    casts: int = 0
    io: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _constant_problem(a: np.ndarray, scale: bool) -> str | None:
    """Why fp16 cannot hold this constant, or None."""
    mag = np.abs(a[np.isfinite(a)].astype(np.float64))
    if mag.size and mag.max() > FP16_MAX:
        return f"constant {mag.max():.3g} overflows fp16"
    nz = mag[mag > 0]
    if scale and nz.size and nz.min() < FP16_MIN_NORMAL:
        return f"Q/DQ scale {nz.min():.3g} is subnormal in fp16"
    if a.size == 1 and nz.size and np.float16(nz[0]) == 0:
        return f"constant {nz[0]:.3g} rounds to 0 in fp16"
    return None


class Fp16Pass(ir.passes.InPlacePass):
    """The pass; ``types`` are the ONNX element types of the graph's tensors before it."""

    def __init__(self, cfg: Fp16Config, types: dict[str, int], report: Fp16Report):
        super().__init__()
        self.cfg, self.types, self.report = cfg, types, report
        self._copies: dict[tuple[int, ir.DataType], ir.Value] = {}

    def _float(self, v: ir.Value | None) -> bool:
        return v is not None and self.types.get(v.name or "") == onnx.TensorProto.FLOAT

    def _keep_reason(self, node: ir.Node) -> str | None:
        if node.op_type in self.cfg.keep_fp32_ops:
            return f"{node.op_type}: a reduction, accumulated in fp32"
        if any(fnmatch.fnmatchcase(node.name or "", p) for p in self.cfg.keep_fp32_nodes):
            return "keep_fp32_nodes"
        for i, v in enumerate(node.inputs):
            if self._float(v) and v.const_value is not None:
                scale = node.op_type in _QDQ and i == 1
                why = _constant_problem(v.const_value.numpy(), scale)
                if why:
                    return why
        return None

    def _cast(self, g: ir.Graph, v: ir.Value, to: ir.DataType, before: ir.Node) -> ir.Value:
        """``v`` as ``to``: a converted copy of an initializer, else a Cast (one per value)."""
        key = (id(v), to)
        if key not in self._copies:
            suffix = "fp16" if to == F16 else "fp32"
            if v.const_value is not None:
                arr = v.const_value.numpy().astype(np.float16 if to == F16 else np.float32)
                new = ir.Value(name=f"{v.name}_{suffix}", shape=v.shape, type=ir.TensorType(to),
                               const_value=ir.tensor(arr, name=f"{v.name}_{suffix}"))  # fmt: skip
                g.register_initializer(new)
            else:
                node = ir.node("Cast", [v], {"to": to}, name=f"{v.name}_to_{suffix}")
                node.outputs[0].name = f"{v.name}_{suffix}"
                node.outputs[0].dtype = to
                g.insert_before(before, node)
                self.report.casts += 1
                new = node.outputs[0]
            self._copies[key] = new
        return self._copies[key]

    def _retype_initializer(self, v: ir.Value) -> None:
        arr = v.const_value.numpy().astype(np.float16)
        v.const_value = ir.tensor(arr, name=v.name)
        v.dtype = F16

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        g = model.graph
        kept = {}
        for node in g:
            why = self._keep_reason(node)
            if why:
                kept[id(node)] = why
                self.report.kept_fp32[node.name or node.op_type] = why
        # Initializers read only by fp16 nodes become fp16 in place (their names kept).
        for v in list(g.initializers.values()):
            if self._float(v) and all(id(u.node) not in kept for u in v.uses()):
                self._retype_initializer(v)
        for v in g.inputs:
            if self._float(v) and v.name not in self.cfg.fp32_io:
                v.dtype = F16
        for node in list(g):
            keep = id(node) in kept
            if not keep:
                for attr in ("to", "output_dtype"):
                    a = node.attributes.get(attr)
                    if a is not None and a.value == F32.value:
                        node.attributes[attr] = ir.AttrInt64(attr, F16.value)
            for o in node.outputs:
                if self._float(o) and not keep:
                    o.dtype = F16
            want = F32 if keep else F16
            for i, v in enumerate(node.inputs):
                if self._float(v) and v.dtype != want:
                    node.replace_input_with(i, self._cast(g, v, want, node))
        self._fix_outputs(g)
        return ir.passes.PassResult(model, modified=True)

    def _fix_outputs(self, g: ir.Graph) -> None:
        for k, v in enumerate(list(g.outputs)):
            if not self._float(v):
                continue
            want = F32 if v.name in self.cfg.fp32_io else F16
            if v.dtype != want:
                name = v.name
                v.name = f"{name}_{'fp16' if v.dtype == F16 else 'fp32'}"
                node = ir.node("Cast", [v], {"to": want}, name=f"{name}_cast")
                node.outputs[0].name, node.outputs[0].dtype = name, want
                node.outputs[0].shape = v.shape
                g.append(node)
                g.outputs[k] = node.outputs[0]
                self.report.casts += 1
        for v in [*g.inputs, *g.outputs]:
            if v.dtype in (F16, F32):
                self.report.io[v.name] = v.dtype.name


def to_fp16(
    model: onnx.ModelProto, cfg: Fp16Config | None = None
) -> tuple[onnx.ModelProto, Fp16Report]:
    """A copy of ``model`` (weights loaded) with its float parts in fp16, and what was kept."""
    cfg = cfg or Fp16Config()
    types = value_types(model)
    m = ir.from_proto(model)
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(m)
    # Constants lifted to initializers: their types too (the inference saw Constant nodes).
    report = Fp16Report()
    Fp16Pass(cfg, types, report)(m)
    out = ir.to_proto(m)
    del out.graph.value_info[:]  # stale for every retyped tensor; consumers infer again
    return out, report
