"""The backends a decoding step runs on: one registry, and the one grammar that names them.

A backend is written ``KIND`` (``torch``; ``ort`` with the command's export folder),
``LABEL=DIR`` or ``LABEL=DIR,PLAN``. A label is a registered kind or a kind followed by
``-anything`` (``trt-int8=DIR,PLAN`` is a TensorRT row labelled ``trt-int8``); any other
label with a folder (``int8=DIR``, ``peer=DIR``) runs that export on ONNX Runtime's CPU.
Every command that takes a backend (generate, edit, compare, bench, eval, serve) parses it
here and opens it with :func:`make_backend`, so adding a backend is one entry in ``KINDS``
and one branch there.

This module imports nothing heavy at load: the CLI reads ``KINDS`` to build its choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sasq.errors import UserError

if TYPE_CHECKING:
    from sasq.engines.decode import StepBackend
    from sasq.engines.trt_plan import BatchRange
    from sasq.models import LoadedModel


@dataclass(frozen=True)
class Kind:
    """One runtime a step can run on. ``model``: it runs the PyTorch model (a loaded
    checkpoint); ``folder``: it runs (or reads the int8 cache of) an export folder;
    ``plan``: it needs a TensorRT plan (``sasq build``); ``provider``: ONNX Runtime's
    execution provider; ``gpu``: it needs an NVIDIA GPU."""

    name: str
    help: str
    model: bool = False
    folder: bool = True
    plan: bool = False
    provider: str | None = None
    gpu: bool = False


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("torch", "PyTorch", model=True, folder=False),
        Kind(
            "torch-int8-cache",
            "PyTorch with the int8 KV cache of a quantized export (the reference of its numerics)",
            model=True,
        ),
        Kind("ort", "the export under ONNX Runtime's CPU provider", provider="cpu"),
        Kind(
            "ort-cuda", "the export under ONNX Runtime's CUDA provider", provider="cuda", gpu=True
        ),
        Kind(
            "ort-trt",
            "the export under ONNX Runtime's TensorRT provider",
            provider="tensorrt",
            gpu=True,
        ),
        Kind("trt", "a TensorRT plan of the export's step graph (sasq build)", plan=True, gpu=True),
    )
}
BACKENDS = tuple(KINDS)
GRAMMAR = "KIND, LABEL=DIR or LABEL=DIR,PLAN (KIND: " + ", ".join(KINDS) + ")"


@dataclass(frozen=True)
class BackendSpec:
    """One parsed backend: its row label, its kind, and the files it runs."""

    label: str
    kind: str
    folder: Path | None = None
    plan: Path | None = None

    @property
    def text(self) -> str:
        """The spec as a user writes it (``label=DIR,PLAN``)."""
        if self.folder is None:
            return self.label
        return f"{self.label}={self.folder}" + (f",{self.plan}" if self.plan else "")


def kind_of(label: str) -> str:
    """The kind a row label names: the registered kind it equals or starts as
    (``kind-...``, the longest such), else ``ort`` (any export on the CPU)."""
    if label in KINDS:
        return label
    prefixed = [k for k in KINDS if label.startswith(k + "-") and not KINDS[k].model]
    return max(prefixed, key=len) if prefixed else "ort"


def parse_spec(text: str, folder: str | Path | None = None) -> BackendSpec:
    """One backend spec. ``folder``: the export a bare kind (``ort``) runs, from the
    command's own export option."""
    label, eq, rest = text.strip().partition("=")
    if not label:
        raise UserError(f"backend {text!r}: expected {GRAMMAR}")
    if not eq:
        if label not in KINDS:
            raise UserError(f"unknown backend {label!r}; expected {GRAMMAR}")
        spec = BackendSpec(label, label, Path(folder) if folder is not None else None)
    else:
        d, _, p = rest.partition(",")
        if not d:
            raise UserError(f"backend {text!r}: no export folder after '='")
        spec = BackendSpec(label, kind_of(label), Path(d), Path(p) if p else None)
    check_spec(spec)
    return spec


def check_spec(spec: BackendSpec) -> None:
    """What a spec written as text needs, said in the spec's own form (a bench row, a
    compare side): its kind's folder and plan."""
    kind = KINDS[spec.kind]
    if kind.folder and spec.folder is None:
        raise UserError(f"backend {spec.label} runs an export folder: write {spec.label}=DIR")
    if kind.plan and spec.plan is None:
        raise UserError(f"backend {spec.text}: a TensorRT row is {spec.label}=DIR,PLAN")
    if not kind.plan and spec.plan is not None:
        raise UserError(f"backend {spec.label} takes no plan: only {spec.label}=DIR")


def check_args(
    name: str, onnx_dir: str | Path | None = None, engine: str | Path | None = None
) -> None:
    """What :func:`make_backend`'s kind ``name`` needs of its other arguments, named as its
    parameters (the CLI shows the flags that set them), before anything is loaded."""
    if name not in KINDS:
        raise UserError(
            f"unknown backend {name!r}; choose from {', '.join(KINDS)}", param="backend"
        )
    kind = KINDS[name]
    no_folder, no_plan = kind.folder and onnx_dir is None, kind.plan and engine is None
    what = "a quantized export" if kind.model else "an export folder"
    missing = [f"`onnx_dir` ({what})"] * no_folder + ["`engine` (a plan: build_engine)"] * no_plan
    if missing:
        param = "onnx_dir" if no_folder else "engine"
        raise UserError(f"`backend` {name} needs {' and '.join(missing)}", param=param)


def split_specs(text: str) -> tuple[str, ...]:
    """A comma list of specs, where a TensorRT row ``trt=DIR,PLAN`` keeps its comma: the
    item after a ``trt...=DIR`` item is its plan unless it is a row of its own."""
    out: list[str] = []
    for item in text.split(","):
        prev = out[-1] if out else ""
        own_row = "=" in item or item in KINDS
        prev_label = prev.partition("=")[0]
        if not own_row and "=" in prev and "," not in prev and KINDS[kind_of(prev_label)].plan:
            out[-1] = f"{prev},{item}"
        else:
            out.append(item)
    return tuple(out)


def make_backend(
    name: str,
    model: LoadedModel | None,
    onnx_dir: str | Path | None = None,
    threads: int = 0,
    engine: str | Path | None = None,
    batch: BatchRange | None = None,
    int8_kernels: str = "auto",
    io_binding: bool | None = None,
) -> StepBackend:
    """Open a backend of kind ``name``: ``torch`` runs the PyTorch model
    (``torch-int8-cache``: with the int8 KV cache of a quantized export); ``ort*`` run an
    export folder (``sasq export``) under ONNX Runtime's CPU, CUDA or TensorRT provider;
    ``trt`` runs the step graph as a TensorRT plan, the rest under ONNX Runtime.
    ``batch``: the batches the ORT TensorRT provider builds its engines for (a ``trt``
    plan carries its own range)."""
    check_args(name, onnx_dir, engine)
    kind = KINDS[name]
    spec = BackendSpec(name, name, Path(onnx_dir) if onnx_dir is not None else None,
                       Path(engine) if engine is not None and kind.plan else None)  # fmt: skip
    if kind.model and model is None:
        raise UserError(f"backend {name} runs the PyTorch model: none loaded", param="model")
    if name == "torch":
        from sasq.engines.torch_backend import TorchBackend

        return TorchBackend(model)
    if name == "torch-int8-cache":
        from sasq.engines.torch_backend import CacheQuant, TorchBackend

        return TorchBackend(model, CacheQuant.from_export(spec.folder))
    if kind.plan:
        from sasq.engines.trt_backend import TrtBackend

        return TrtBackend(spec.folder, spec.plan)
    from sasq.engines.ort_backend import OrtBackend
    from sasq.engines.ort_session import SessionConfig

    cfg = SessionConfig.for_int8(
        provider=kind.provider, intra_op_threads=threads, int8_kernels=int8_kernels
    )
    return OrtBackend(spec.folder, cfg, io_binding, batch=batch)


def open_spec(
    spec: BackendSpec,
    model: LoadedModel | None,
    threads: int = 0,
    batch: BatchRange | None = None,
    int8_kernels: str = "auto",
    io_binding: bool | None = None,
) -> StepBackend:
    """The backend a parsed spec names."""
    return make_backend(
        spec.kind, model, spec.folder, threads, spec.plan, batch, int8_kernels, io_binding
    )
