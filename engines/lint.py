"""TensorRT-readiness lint for Q/DQ ONNX models: the explicit-quantization rules sasq
writes by (README "A tour of the CLI", ``quantize``), checked on any machine (no TensorRT,
no GPU, weights' external data never loaded).

    violations = lint("model.qdq.onnx")           # [] when the graph is ready
    print(format_violations(violations))
    lint_or_raise("model.qdq.onnx")               # CLI: UserError with the count

Each rule is one function over the graph; a violation says which node and why.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from sasq.engines.config import Coverage, LintConfig, Target
from sasq.engines.lint_graph import MOVES as _MOVES
from sasq.engines.lint_graph import LintGraph as _Graph
from sasq.engines.lint_support import check_support
from sasq.errors import UserError
from sasq.plain_names import check_external_data


class Rule(str, Enum):
    OPSET = "opset"  # default-domain opset below the minimum / outside the parser's range
    UNSUPPORTED_OP = "unsupported-op"  # not an op the chosen TensorRT's ONNX parser takes
    UNSUPPORTED_DTYPE = "unsupported-dtype"  # an op or graph I/O on a type that parser rejects
    ZERO_POINT_TYPE = "zero-point-type"  # not signed int8 (uint8, fp8, int4 where not allowed ...)
    ZERO_POINT_NONZERO = "zero-point-nonzero"  # asymmetric quantization
    SCALE_NOT_CONSTANT = "scale-not-constant"  # scale / zero point not a build-time constant
    SCALE_VALUE = "scale-value"  # scale not positive and finite
    ACTIVATION_GRANULARITY = "activation-granularity"  # activation Q/DQ not per tensor
    WEIGHT_GRANULARITY = "weight-granularity"  # weight DQ not per output channel / wrong axis
    QDQ_PAIR = "qdq-pair"  # Q not followed by DQ, or a pair whose scales differ
    MATMUL_ONE_SIDED = "matmul-one-sided"  # a quantized GEMM with DQ on one input only
    UNQUANTIZED_MATMUL = "unquantized-matmul"  # a non-tiny GEMM left float under Coverage.ALL
    SOFTMAX_SCALE = "softmax-scale"  # softmax output Q scale is not 1/127
    CACHE_FLOAT = "cache-float"  # a KV cache input/output that is not int8 (int8 cache graphs)
    ORT_DQ_ADJACENT = "ort-dq-adjacent"  # ORT target: an op between a DQ and its MatMul


RECOMMENDED_OPSET = 17  # LayerNormalization; per-axis Q/DQ itself needs 13
_GEMMS = ("MatMul", "Gemm")
_WEIGHTED = ("MatMul", "Gemm", "Conv", "ConvTranspose")  # (input 0, input 1) need DQ together
# Ops between Softmax and the probabilities' Q (the shift-and-sum 1/n weights and gathers).
_PROB_PATH = _MOVES | {"Concat", "Mul", "Cast"}


@dataclass(frozen=True)
class Violation:
    rule: Rule
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule.value}] {self.node}: {self.message}"


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _qdq(g: _Graph) -> Iterator[onnx.NodeProto]:
    ops = ("QuantizeLinear", "DequantizeLinear")
    return (n for n in g.nodes if n.op_type in ops and n.domain in ("", "ai.onnx"))


def _check_opset(model: onnx.ModelProto, cfg: LintConfig) -> Iterator[Violation]:
    ver = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if ver is None or ver < cfg.min_opset:
        why = f"per-axis Q/DQ needs 13; {RECOMMENDED_OPSET}+ recommended"
        msg = f"default-domain opset {ver} < {cfg.min_opset} ({why})"
        yield Violation(Rule.OPSET, "<model>", msg)


def _check_qparams(g: _Graph, cfg: LintConfig) -> Iterator[Violation]:
    """Signed int8 (int4 weights if allowed), zero point 0, constant positive finite scales."""
    for n in _qdq(g):
        name, weight, scale = g.name(n), g.is_weight(n), g.value(n.input[1])
        if scale is None:
            msg = f"scale {n.input[1]!r} is not an initializer or Constant"
            yield Violation(Rule.SCALE_NOT_CONSTANT, name, msg)
        elif scale.size == 0 or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            bad = scale[~(np.isfinite(scale) & (scale > 0))].ravel()[:3].tolist()
            yield Violation(Rule.SCALE_VALUE, name, f"scale must be positive and finite: {bad}")
        has_zp = len(n.input) > 2 and n.input[2] != ""
        # ORT target: uint8 activations (any zero point) are what its x86 kernels take; the
        # bounded u8 x s8 form writes queries and probabilities so (exporter/u8s8.py)
        ort_u8 = has_zp and cfg.target == Target.ORT and not weight
        ort_u8 = ort_u8 and g.dtype(n.input[2]) == TensorProto.UINT8
        if has_zp:
            ztype = g.dtype(n.input[2])
            zp = g.value(n.input[2])
            if g.const_tensor(n.input[2]) is None:
                msg = f"zero point {n.input[2]!r} is not a constant"
                yield Violation(Rule.SCALE_NOT_CONSTANT, name, msg)
            elif zp is not None and np.any(zp.astype(np.int64) != 0) and not ort_u8:
                msg = f"zero point must be 0 (symmetric), got {zp.ravel()[:3].tolist()}"
                yield Violation(Rule.ZERO_POINT_NONZERO, name, msg)
        elif n.op_type == "QuantizeLinear":
            ztype = _attr(n, "output_dtype", 0) or TensorProto.UINT8
        else:
            ztype = g.dtype(n.input[0])
        int4_ok = cfg.allow_int4_weights and weight and ztype == TensorProto.INT4
        if ztype is not None and ztype != cfg.quant_dtype and not (int4_ok or ort_u8):
            tname = TensorProto.DataType.Name(ztype)
            hint = " (no zero point: ONNX defaults to uint8)" if not has_zp else ""
            want = TensorProto.DataType.Name(cfg.quant_dtype)
            msg = f"quantized type {tname}{hint}; this graph's TensorRT type is {want}"
            yield Violation(Rule.ZERO_POINT_TYPE, name, msg)


def _expected_axis(g: _Graph, x: str, rank: int, depth: int = 0) -> tuple[int, str] | None:
    """The output-channel axis of weight tensor `x` (seen through Identity / Transpose) for
    the GEMM or Conv it feeds, and that consumer's name."""
    for user, idx in g.consumers.get(x, []) if depth < 8 else []:
        if user.op_type == "Identity":
            found = _expected_axis(g, user.output[0], rank, depth + 1)
        elif user.op_type == "Transpose":
            perm = next((list(a.ints) for a in user.attribute if a.name == "perm"), None)
            found = _expected_axis(g, user.output[0], rank, depth + 1)
            perm = perm or list(range(rank))[::-1]
            found = (perm[found[0]], found[1]) if found and found[0] < len(perm) else None
        elif user.op_type == "MatMul" and idx == 1 and rank >= 2:
            found = rank - 1, g.name(user)
        elif user.op_type == "Gemm" and idx == 1:
            found = (0 if _attr(user, "transB", 0) else 1), g.name(user)
        elif user.op_type == "Conv" and idx == 1:
            found = 0, g.name(user)
        else:
            found = None
        if found is not None:
            return found
    return None


def _check_granularity(g: _Graph, cfg: LintConfig) -> Iterator[Violation]:
    """Activations per tensor; weights per output channel on the right axis."""
    for n in _qdq(g):
        scale, name = g.value(n.input[1]), g.name(n)
        if scale is None:
            continue
        if not g.is_weight(n):
            if scale.size != 1:
                msg = f"activation scale has {scale.size} values; must be per tensor"
                yield Violation(Rule.ACTIVATION_GRANULARITY, name, msg)
            continue
        if n.op_type != "DequantizeLinear" or not cfg.weights_per_channel:
            continue
        if _attr(n, "block_size", 0) and not cfg.allow_int4_weights:
            yield Violation(Rule.WEIGHT_GRANULARITY, name, "blocked quantization is int4-only")
            continue
        wshape = g.shape(n.input[0]) or []
        expected = _expected_axis(g, n.output[0], len(wshape))
        if expected is None or not wshape:
            continue
        axis_want, user = expected
        channels = wshape[axis_want]
        axis = _attr(n, "axis", 1)
        axis = axis + len(wshape) if axis < 0 else axis
        if scale.size == 1:
            msg = f"per-tensor weight scale for {user}; expected per-channel on axis {axis_want}"
        elif axis != axis_want:
            msg = f"weight axis {axis} for {user}; expected the output-channel axis {axis_want}"
        elif scale.size != channels:
            msg = f"{scale.size} scales for {channels} output channels"
        else:
            continue
        if channels != 1:
            yield Violation(Rule.WEIGHT_GRANULARITY, name, msg)


def _readers(
    g: _Graph, x: str, through: tuple[str, ...] = ("Concat",), depth: int = 0
) -> Iterator[tuple[onnx.NodeProto, str]]:
    """The consumers of int8 tensor x, seen through the layout ops ``through`` (the int8
    KV cache appends a step's quantized tokens to the cache by concatenation, which
    TensorRT runs on int8; the ``ort`` target also transposes the new keys as int8)."""
    for user, _ in g.consumers.get(x, []):
        if user.op_type in through and depth < 4:
            yield from _readers(g, user.output[0], through, depth + 1)
        elif user.op_type != "Shape":  # a Shape reads the dims only
            yield user, x


def _check_pairs(g: _Graph, cfg: LintConfig) -> Iterator[Violation]:
    """Every Q feeds only DQs with the same scale (TensorRT fuses Q->DQ pairs), directly
    or through int8 Concats (a cache, also a graph output) and, on the ``ort`` target,
    int8 Transposes (the new keys)."""
    through = ("Concat", "Transpose") if cfg.target == Target.ORT else ("Concat",)
    for n in _qdq(g):
        if n.op_type != "QuantizeLinear":
            continue
        s = g.value(n.input[1])
        for user, _ in _readers(g, n.output[0], through):
            if user.op_type != "DequantizeLinear":
                msg = f"Q feeds {user.op_type} {g.name(user)}, not a DequantizeLinear"
                yield Violation(Rule.QDQ_PAIR, g.name(n), msg)
                continue
            s2 = None if user.input[1] == n.input[1] else g.value(user.input[1])
            if s is None or s2 is None:
                continue
            if s.shape != s2.shape or not np.allclose(s, s2, rtol=1e-6, atol=0):
                msg = f"DQ scale differs from its Q {g.name(n)}"
                yield Violation(Rule.QDQ_PAIR, g.name(user), msg)


def _dims(g: _Graph, n: onnx.NodeProto) -> tuple[int | None, int | None, int | None]:
    """(M, K, N) of a MatMul/Gemm where statically known."""
    a, b = g.shape(n.input[0]), g.shape(n.input[1])
    if n.op_type == "Gemm":
        a = a[::-1] if a and _attr(n, "transA", 0) else a
        b = b[::-1] if b and _attr(n, "transB", 0) else b
    m = a[-2] if a and len(a) >= 2 else None
    k = b[-2] if b and len(b) >= 2 else (a[-1] if a else None)
    n_ = b[-1] if b and len(b) >= 2 else None
    return m, k, n_


def _check_gemms(g: _Graph, cfg: LintConfig) -> Iterator[Violation]:
    """Q/DQ on both inputs of every quantized GEMM; under ALL, every non-tiny GEMM quantized."""
    for n in g.nodes:
        if n.op_type not in _WEIGHTED or len(n.input) < 2:
            continue
        name = g.name(n)
        q = [g.quantized(x) for x in n.input[:2]]
        kept = any(fnmatch.fnmatchcase(name, pat) for pat in cfg.float_nodes)
        if sum(q) == 1 and not kept:  # a GEMM kept float may read a dequantized cache
            has, lacks = ("A", "B") if q[0] else ("B", "A")
            msg = f"{n.op_type}: input {has} is dequantized, input {lacks} is float"
            yield Violation(Rule.MATMUL_ONE_SIDED, name, msg)
        elif not any(q) and n.op_type in _GEMMS and cfg.coverage is Coverage.ALL:
            if kept:
                continue
            m, k, nn = _dims(g, n)
            small = [d for d in (k, nn) if d is not None and d < cfg.min_gemm_dim]
            if small or 1 in (m, nn):
                continue
            msg = f"{n.op_type} (K={k}, N={nn}) is float; quantize it or list it in float_nodes"
            yield Violation(Rule.UNQUANTIZED_MATMUL, name, msg)


def _check_softmax(g: _Graph, cfg: LintConfig) -> Iterator[Violation]:
    """The Q on softmax probabilities (when present) uses scale 1/127: p in [0, 1] -> [0, 127]."""
    for n in g.nodes:
        if n.op_type != "Softmax":
            continue
        seen, stack = set(), [n.output[0]]
        while stack:
            x = stack.pop()
            for user, _ in g.consumers.get(x, []):
                if id(user) in seen:
                    continue
                seen.add(id(user))
                if user.op_type == "QuantizeLinear":
                    s = g.value(user.input[1])
                    if s is None or s.size != 1:
                        continue  # reported by the scale rules
                    got = float(s.ravel()[0])
                    # as close as the scale's own type holds 1/127 (an fp16 rest: 0.0078735)
                    want = float(np.asarray(cfg.softmax_scale, s.dtype))
                    if abs(got - want) > cfg.softmax_rtol * want:
                        msg = f"softmax output Q scale {got:.8g}, expected {want:.8g}"
                        yield Violation(Rule.SOFTMAX_SCALE, g.name(user), msg)
                elif user.op_type in _PROB_PATH:
                    stack.extend(user.output)


def _check_cache(g: _Graph, model: onnx.ModelProto, cfg: LintConfig) -> Iterator[Violation]:
    """With the int8 KV cache, every cache input and output is int8 (it never returns to
    float between steps)."""
    if not cfg.int8_cache:
        return
    io = [*model.graph.input, *model.graph.output]
    for vi in io:
        if not vi.name.startswith(("past_", "present_")):
            continue
        elem = vi.type.tensor_type.elem_type
        if elem != cfg.quant_dtype:
            want = TensorProto.DataType.Name(cfg.quant_dtype)
            msg = f"KV cache tensor is {TensorProto.DataType.Name(elem)}, expected {want}"
            yield Violation(Rule.CACHE_FLOAT, vi.name, msg)


def _check_ort_adjacent(g: _Graph, cfg: LintConfig) -> Iterator[Violation]:
    """ORT target: a quantized MatMul's inputs come straight from DQs; through a Transpose
    or Reshape ONNX Runtime would run DequantizeLinear + float MatMul instead of an int8
    kernel."""
    if cfg.target != Target.ORT:
        return
    for n in g.nodes:
        if n.op_type not in _GEMMS or len(n.input) < 2:
            continue
        for x in n.input[:2]:
            p = g.producer.get(x)
            if p is not None and p.op_type != "DequantizeLinear" and g.quantized(x):
                msg = f"{p.op_type} {g.name(p)} sits between a DequantizeLinear and the MatMul"
                yield Violation(Rule.ORT_DQ_ADJACENT, g.name(n), msg)


def _load(model: onnx.ModelProto | str | Path) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = Path(model)
    if not path.is_file():
        raise UserError(f"no ONNX model at {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise UserError(f"{path} is not a readable ONNX model: {e}") from e
    if not proto.HasField("graph") or not proto.ir_version:
        # Protobuf parses zero bytes (and some junk) as an empty message, which then
        # linted as a model with no opset; a model always has a graph and an IR version.
        size = path.stat().st_size
        why = "an empty file" if size == 0 else f"{size} bytes holding no ONNX graph"
        raise UserError(f"{path}: cannot be read as ONNX ({why})")
    check_external_data(path, model=proto)  # scales are read from it: inside its folder only
    return proto, path.parent


def lint(model: onnx.ModelProto | str | Path, cfg: LintConfig | None = None) -> list[Violation]:
    """Every way `model` breaks the TensorRT explicit-quantization rules (module doc), and (tensorrt
    target) what the chosen TensorRT version's ONNX parser would refuse; [] if none."""
    cfg = cfg if cfg is not None else LintConfig()
    proto, base_dir = _load(model)
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shapes only sharpen the tiny-GEMM exemption; lint without them
        inferred = proto
    g = _Graph(inferred, base_dir)
    out = list(_check_opset(proto, cfg))
    if cfg.target == Target.TENSORRT:  # the parser's table: ops, per-op dtypes, opset range
        found = check_support(inferred, cfg.support, cfg.extra_ops)
        out += [Violation(Rule(rule), node, msg) for rule, node, msg in found]
    checks = (_check_qparams, _check_granularity, _check_pairs, _check_gemms, _check_softmax,
              _check_ort_adjacent)  # fmt: skip
    for check in checks:
        out.extend(check(g, cfg))
    out.extend(_check_cache(g, proto, cfg))
    return out


def _summary(violations: list[Violation]) -> str:
    counts = sorted(Counter(v.rule.value for v in violations).items())
    return f"{len(violations)} violation(s) (" + ", ".join(f"{r} x{c}" for r, c in counts) + ")"


_LABELS = {Target.TENSORRT: "TensorRT", Target.ORT: "ONNX Runtime"}


def format_violations(violations: list[Violation], target: Target = Target.TENSORRT) -> str:
    """One line per violation, then a summary line (PASSED / FAILED with counts per rule)."""
    label = _LABELS[Target(target)]
    if not violations:
        return f"{label} lint PASSED: no violations"
    return "\n".join([*map(str, violations), f"{label} lint FAILED: {_summary(violations)}"])


def config_for_export(quant: dict, **overrides) -> LintConfig:
    """The lint rules of a quantized export from its manifest's ``extra["quant"]`` record:
    its target, whether its cache is int8, and the GEMMs it kept float (and why)."""
    fp8 = quant.get("precision") == "fp8"
    fields = {
        "float_nodes": tuple(quant.get("kept_float", {})),
        "target": Target(quant.get("target", Target.TENSORRT.value)),
        "int8_cache": quant.get("kv_cache") == "int8",
        "quant_dtype": TensorProto.FLOAT8E4M3FN if fp8 else TensorProto.INT8,
        "softmax_scale": 1.0 / 448.0 if fp8 else 1.0 / 127.0,
    }
    return LintConfig(**{**fields, **overrides})


def lint_or_raise(path: str | Path, cfg: LintConfig | None = None) -> None:
    """For the CLI: nothing if `path` passes, else a one-line UserError with the count."""
    violations = lint(path, cfg)
    if violations:
        raise UserError(f"{path}: TensorRT lint: {_summary(violations)}; first: {violations[0]}")
