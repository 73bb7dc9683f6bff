"""ONNX Runtime sessions from one frozen config: provider, threads, optimization level,
disabled graph optimizers (e.g. ``MatMulAddFusion``, which breaks int8 Q/DQ MatMuls on CPU),
profiling, and the int8 kernel policy.

The int8 kernel policy (``int8_kernels``, default AUTO): on x86 ONNX Runtime runs int8
products as u8 x s8, whose kernel saturates on CPUs without VNNI (``int8_kernels.py``). A
CPU-EP session of a graph with a product that can saturate there (``int8_graph``: an 8-bit
export such as the tensorrt target or ORT's ``quantize_static`` run on the CPU) is opened
with ``session.qdqisint8allowed=1``: s8 x s8, exact on every CPU, slower on AVX2. Graphs
whose u8 x s8 operands are bounded (the ``ort`` target's default form) keep the fast
kernels. ``open_session`` returns what was chosen and why (``KernelChoice``), which the
tools record beside every number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import onnxruntime as ort

from sasq.engines.int8_kernels import CpuInt8, Int8Kernels, cpu_int8
from sasq.errors import UserError


class Provider(str, Enum):
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


class GraphOpt(str, Enum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    LAYOUT = "layout"
    ALL = "all"


# Requested provider -> ORT provider chain (fallbacks after the first).
_CHAINS = {
    Provider.CPU: ("CPUExecutionProvider",),
    Provider.CUDA: ("CUDAExecutionProvider", "CPUExecutionProvider"),
    Provider.TENSORRT: (
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider",
    ),
}  # fmt: skip
_LEVELS = {
    GraphOpt.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    GraphOpt.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    GraphOpt.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    GraphOpt.LAYOUT: ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT,
    GraphOpt.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_NAMES = {Provider.CUDA: "CUDA", Provider.TENSORRT: "TensorRT"}

# ORT's MatMulAddFusion turns DequantizeLinear -> MatMul -> Add(bias) into DequantizeLinear
# + an fp32 Gemm: an int8 linear then runs in float, slower than the FP graph (0.62-0.85x
# measured on four VAR-d16 blocks), where with the fusion off the same graph runs as
# MatMulIntegerToFloat (1.5-1.6x). Harmless for an FP graph. See ``SessionConfig.for_int8``.
INT8_DISABLED_OPTIMIZERS: tuple[str, ...] = ("MatMulAddFusion",)


@dataclass(frozen=True)
class SessionConfig:
    """provider: "cpu" | "cuda" | "tensorrt" (each falls back to the ones after it).
    intra_op_threads: 0 lets ONNX Runtime choose (all physical cores).
    profile_prefix: where ORT writes its JSON trace when ``enable_profiling``."""

    provider: Provider = Provider.CPU
    intra_op_threads: int = 0
    graph_optimization: GraphOpt = GraphOpt.ALL
    disabled_optimizers: tuple[str, ...] = ()
    enable_profiling: bool = False
    # ORT's CPU arena keeps the largest block it ever needed per shape; calibration, which
    # returns many large intermediates at every scale, peaks far lower without it.
    cpu_mem_arena: bool = True
    # ORT's priority-based node order frees a tensor as soon as its last reader ran; with the
    # default order, calibration's graph (many extra outputs, a mean over every layer's
    # attention probabilities) kept every layer's probabilities alive until the step ended:
    # 2.2 GB -> 1.2 GB above the baseline on a VAR-d8 at 512 px, the probabilities of all
    # 36 layers (~24 GB) on VAR-d36.
    priority_order: bool = False
    profile_prefix: str = "ort_profile"
    # The int8 kernel policy (module docstring). u8s8_saturates: None reads this CPU; True /
    # False decide as on a CPU whose u8 x s8 kernel does / does not saturate, so tests take
    # the no-VNNI path on any machine.
    int8_kernels: Int8Kernels = Int8Kernels.AUTO
    u8s8_saturates: bool | None = None
    # ORT's intra-op workers spin for a while after each run, waiting for more work. The
    # decoding loop keeps a dozen sessions (start, step, one next-scale graph per scale,
    # decoder), each with its own pool, and the host samples between them: every pool's
    # spinning workers took the cores from the session that ran next and from the host.
    # Off, VAR-d16 int8 (2 threads, batch 1 + CFG) went from 1950 to 1440-1640 ms per
    # image, the steps alone from 1590 to 1250-1450 ms (docs/evidence/d16-roofline.md).
    allow_spinning: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "provider", Provider(self.provider))
            object.__setattr__(self, "graph_optimization", GraphOpt(self.graph_optimization))
            object.__setattr__(self, "int8_kernels", Int8Kernels(self.int8_kernels))
        except ValueError as e:
            raise UserError(str(e)) from None
        object.__setattr__(self, "disabled_optimizers", tuple(self.disabled_optimizers))
        if self.intra_op_threads < 0:
            raise UserError("intra_op_threads must be >= 0", param="intra_op_threads")

    @classmethod
    def for_int8(cls, **fields) -> SessionConfig:
        """The session every int8 (Q/DQ) graph runs in: ``fields`` as given, with
        ``disabled_optimizers=INT8_DISABLED_OPTIMIZERS``, because ORT's MatMulAddFusion would
        fold each DQ -> MatMul -> Add(bias) into an fp32 Gemm and run the int8 linears in
        float (slower than FP32); without it they run as MatMulIntegerToFloat. Also right
        for FP graphs (nothing to fuse differently that matters), so backends that open
        either kind of export use it."""
        return cls(**{"disabled_optimizers": INT8_DISABLED_OPTIMIZERS, **fields})


def providers_for(provider: Provider | str) -> list[str]:
    """The ORT provider chain; ``UserError`` if this onnxruntime build lacks the first."""
    p = Provider(provider)
    chain = _CHAINS[p]
    if chain[0] not in ort.get_available_providers():
        raise UserError(
            f"{_NAMES[p]} execution provider is not available in this onnxruntime build "
            "(install sasq[gpu] in an environment without the CPU onnxruntime wheel)"
        )
    return list(chain)


@dataclass(frozen=True)
class KernelChoice:
    """The int8 kernels a session runs and why. kernels: "u8s8" (ORT's x86 default),
    "s8s8" (``session.qdqisint8allowed=1``, or ORT's default off x86), "none" (no int8
    product), or "provider" (a GPU provider's own). products / can_saturate: the graph's
    integer GEMMs and those whose u8 x s8 pair sums can overflow int16 (None: not needed
    for the decision, so not analyzed)."""

    kernels: str
    reason: str
    cpu: CpuInt8
    products: int | None = None
    can_saturate: int | None = None

    def as_dict(self) -> dict:
        return {"kernels": self.kernels, "reason": self.reason, "int8_products": self.products,
                "can_saturate": self.can_saturate, "cpu": self.cpu.as_dict()}  # fmt: skip


def choose_kernels(
    path: str | Path | bytes,
    cfg: SessionConfig,
    external_data_dir: str | Path | None = None,
) -> KernelChoice:
    """The int8 kernels of a session on ``path`` under ``cfg`` (module docstring)."""
    cpu = cpu_int8()
    default = "u8s8" if cpu.x86 else "s8s8"
    if cfg.provider != Provider.CPU:
        return KernelChoice("provider", f"{cfg.provider.value} provider's own kernels", cpu)
    if cfg.int8_kernels == Int8Kernels.S8S8:
        return KernelChoice("s8s8", "asked for (int8_kernels=s8s8)", cpu)
    if cfg.int8_kernels == Int8Kernels.U8S8:
        return KernelChoice(default, "asked for (int8_kernels=u8s8)", cpu)
    saturates = cpu.u8s8_saturates if cfg.u8s8_saturates is None else cfg.u8s8_saturates
    if not saturates:
        return KernelChoice(default, f"u8 x s8 is exact on this CPU ({cpu.kernel})", cpu)
    import onnx

    from sasq.engines.int8_graph import has_qdq, int8_products

    src = onnx.load_from_string(path) if isinstance(path, bytes) else onnx.load(
        str(path), load_external_data=False)  # fmt: skip
    if not has_qdq(src):
        return KernelChoice(default, "no int8 product", cpu, 0, 0)
    found = int8_products(path, cfg.disabled_optimizers, external_data_dir)
    bad = sum(p.can_saturate for p in found)
    where = "this CPU" if cfg.u8s8_saturates is None else "a CPU without VNNI (assumed)"
    if bad:
        why = f"{bad} of {len(found)} int8 products can saturate u8 x s8 on {where}"
        return KernelChoice("s8s8", why, cpu, len(found), bad)
    why = f"every u8 x s8 operand pair fits int16: exact on {where}"
    return KernelChoice(default, why, cpu, len(found), 0)


def make_session(
    path: str | Path | bytes,
    cfg: SessionConfig | None = None,
    external_data_dir: str | Path | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on ``path`` (external data beside it is found by ORT), or on a
    serialized model held in memory (``bytes``, e.g. a graph with extra outputs), whose
    external weights ORT then reads from ``external_data_dir``. ``provider_options``: ORT
    provider name -> its options (``engines.ort_gpu``). A session that did not get the
    provider asked for is refused: ORT falls back to the CPU silently when a GPU provider
    fails to load (a missing libcudnn, a TensorRT it was not built against)."""
    return open_session(path, cfg, external_data_dir, provider_options)[0]


def open_session(
    path: str | Path | bytes,
    cfg: SessionConfig | None = None,
    external_data_dir: str | Path | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
) -> tuple[ort.InferenceSession, KernelChoice]:
    """``make_session``, and the int8 kernels it chose (``choose_kernels``)."""
    cfg = cfg or SessionConfig()
    chain = providers_for(cfg.provider)
    opts = provider_options or {}
    providers = [(p, opts[p]) if p in opts else p for p in chain]
    if not isinstance(path, bytes) and not Path(path).is_file():
        raise UserError(f"{path}: no such ONNX file")
    choice = choose_kernels(path, cfg, external_data_dir)
    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg.intra_op_threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = _LEVELS[cfg.graph_optimization]
    so.log_severity_level = 3  # errors only: the CPU EP's "some nodes not assigned" is noise
    so.enable_cpu_mem_arena = cfg.cpu_mem_arena
    so.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if cfg.allow_spinning else "0"
    )
    if cfg.priority_order:
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if external_data_dir is not None:
        so.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(external_data_dir)
        )
    if cfg.enable_profiling:
        so.enable_profiling = True
        so.profile_file_prefix = cfg.profile_prefix
    if choice.kernels == "s8s8":  # no s8 -> u8 rewrite: s8 x s8 kernels, exact everywhere
        so.add_session_config_entry("session.qdqisint8allowed", "1")
    sess = ort.InferenceSession(
        path if isinstance(path, bytes) else str(path),
        so,
        providers=providers,
        disabled_optimizers=list(cfg.disabled_optimizers),
    )
    check_providers(sess.get_providers(), chain, "a model in memory" if isinstance(path, bytes)
                    else str(path))  # fmt: skip
    return sess, choice


def check_providers(got: list[str], chain: list[str], where: str) -> None:
    """A session must run on the provider asked for: ORT falls back to the next one in the
    chain (in the end the CPU) when a GPU provider fails to load, and says so only in a log."""
    if got[:1] != chain[:1]:
        raise UserError(
            f"{where}: asked for ONNX Runtime's {chain[0]}, got {', '.join(got)} (the provider "
            "failed to load: check the CUDA, cuDNN and TensorRT libraries it needs)"
        )
