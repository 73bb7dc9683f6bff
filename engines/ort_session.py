"""ONNX Runtime sessions from one frozen config: provider, threads, optimization level,
disabled graph optimizers (e.g. ``MatMulAddFusion``, which breaks int8 Q/DQ MatMuls on CPU),
profiling."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import onnxruntime as ort

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

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "provider", Provider(self.provider))
            object.__setattr__(self, "graph_optimization", GraphOpt(self.graph_optimization))
        except ValueError as e:
            raise UserError(str(e)) from None
        object.__setattr__(self, "disabled_optimizers", tuple(self.disabled_optimizers))
        if self.intra_op_threads < 0:
            raise UserError("intra_op_threads must be >= 0")


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
    cfg = cfg or SessionConfig()
    chain = providers_for(cfg.provider)
    opts = provider_options or {}
    providers = [(p, opts[p]) if p in opts else p for p in chain]
    so = ort.SessionOptions()
    so.intra_op_num_threads = cfg.intra_op_threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = _LEVELS[cfg.graph_optimization]
    so.log_severity_level = 3  # errors only: the CPU EP's "some nodes not assigned" is noise
    so.enable_cpu_mem_arena = cfg.cpu_mem_arena
    if cfg.priority_order:
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if external_data_dir is not None:
        so.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(external_data_dir)
        )
    if cfg.enable_profiling:
        so.enable_profiling = True
        so.profile_file_prefix = cfg.profile_prefix
    if not isinstance(path, bytes) and not Path(path).is_file():
        raise UserError(f"{path}: no such ONNX file")
    sess = ort.InferenceSession(
        path if isinstance(path, bytes) else str(path),
        so,
        providers=providers,
        disabled_optimizers=list(cfg.disabled_optimizers),
    )
    check_providers(sess.get_providers(), chain, "a model in memory" if isinstance(path, bytes)
                    else str(path))  # fmt: skip
    return sess


def check_providers(got: list[str], chain: list[str], where: str) -> None:
    """A session must run on the provider asked for: ORT falls back to the next one in the
    chain (in the end the CPU) when a GPU provider fails to load, and says so only in a log."""
    if got[:1] != chain[:1]:
        raise UserError(
            f"{where}: asked for ONNX Runtime's {chain[0]}, got {', '.join(got)} (the provider "
            "failed to load: check the CUDA, cuDNN and TensorRT libraries it needs)"
        )
