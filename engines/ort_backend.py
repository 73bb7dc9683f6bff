"""The ONNX Runtime backend of the decoding loop, on an export folder (``sasq.exporter``).

The KV cache, f_hat and the next scale's tokens stay in ONNX Runtime's hands between calls:
the step's ``present_*`` outputs are fed back as the next step's ``past_*`` inputs, and only
the logits (which the host samples from) and the image come out as torch tensors.

``io_binding`` (default: on for CUDA / TensorRT, off for CPU) binds that state as OrtValues
on the device, so on a GPU the cache never leaves it. On CPU ``run()`` already wraps numpy
buffers without copying them, and binding measured no gain (VAR-d16, 2 threads: 4.57 s vs
4.39 s per image; tiny default: 24.1 vs 23.6 ms per batch of 8), so plain ``run()`` is used.
Measured again once sessions stopped spinning, on VAR-d16 int8 (batch 1 + CFG, six
interleaved generations each): 1510 ms bound, 1475 ms plain (medians; ranges 1401-1855
and 1412-1923).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto

from sasq.engines.ort_session import (
    Provider,
    SessionConfig,
    open_session,
)
from sasq.engines.trt_plan import BatchRange
from sasq.errors import UserError
from sasq.exporter.manifest import CacheTensor, Manifest, verify

Value = ort.OrtValue | np.ndarray


# Calibration's view of a step: (scale index, recorded tensors by name).
RecordCallback = Callable[[int, dict[str, np.ndarray]], None]


class OrtBackend:
    """``record`` names step-graph tensors (intermediate ones or inputs) handed to
    ``on_record`` after each step: calibration rollouts run through the same backend.
    ``augment`` may add nodes to the step graph first (their outputs can be recorded).
    ``load_step=False`` leaves the step graph to a subclass (the TensorRT backend)."""

    name = "ort"

    def __init__(
        self,
        onnx_dir: str | Path,
        session_cfg: SessionConfig | None = None,
        io_binding: bool | None = None,
        record: Sequence[str] = (),
        on_record: RecordCallback | None = None,
        augment: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
        load_step: bool = True,
        batch: BatchRange | None = None,
    ):
        self.dir = Path(onnx_dir)
        self.manifest: Manifest = verify(self.dir)
        cfg = session_cfg or SessionConfig()
        self._session_cfg = cfg
        if cfg.provider == Provider.TENSORRT:
            # TensorRT engines are built for a batch range: the command's batches, checked
            # by generate_many against ``batch_range`` (ORT cannot run outside the profile)
            self.batch_range = batch or BatchRange()
        self._batch = batch or BatchRange()
        self._device = "cpu" if cfg.provider == Provider.CPU else "cuda"
        self.io_binding = self._device != "cpu" if io_binding is None else io_binding
        m, d = self.manifest, self.manifest.dims
        self._cache = m.step_cache()
        # ORT's Python API returns float8 outputs as raw uint8 arrays and refuses them as
        # inputs: an fp8 cache stays in OrtValues (run_with_ort_values) between steps.
        self._fp8 = any(c.dtype == "FLOAT8E4M3FN" for c in self._cache)
        self._step_in = ["x_BlC", "mod_BMC", *(c.input for c in self._cache)]
        self._step_out = ["logits", *(c.output for c in self._cache)]
        step = m.graphs["step"]
        if [t.name for t in step.inputs] != self._step_in:
            raise UserError(f"{self.dir}: step.onnx inputs do not match its manifest's cache")
        self._start = self._open("start")
        self._record, self._on_record = list(dict.fromkeys(record)), on_record
        # load_step=False: a subclass runs the step elsewhere (TensorRT), no 1 GB CPU session
        self._step, self._fetch = None, []
        if load_step and self._record:
            from sasq.engines.recorder import expose

            self.io_binding = False  # recorded tensors come back to the host anyway
            # The graph is edited without its weights (a VAR-d16 step holds 1.2 GB); ORT reads
            # them from the export folder, where the external data file lies.
            step_model = onnx.load(str(self.dir / step.file), load_external_data=False)
            if augment is not None:  # e.g. reductions computed in-graph for calibration
                step_model = augment(step_model)
            exposed = expose(step_model, self._record)
            self._step = self._open("step", exposed.SerializeToString())
            fetched = {o.name for o in self._step.get_outputs()}
            self._fetch = [n for n in self._record if n in fetched and n not in self._step_out]
        elif load_step:
            self._step = self._open("step")
        # The graph each scale runs (a TensorRT export's step_long for the scales whose int8
        # attention TensorRT cannot fuse): same inputs, outputs and cache as "step".
        keys = {s.step_graph for s in m.scales} - {"step"}
        if keys and self._record:
            raise UserError(f"{self.dir}: recording needs an export with one step graph")
        self._steps = []
        if load_step:
            steps = {"step": self._step, **{k: self._open(k) for k in sorted(keys)}}
            self._steps = [steps[s.step_graph] for s in m.scales]
        self._next = [self._open(f"next_{s.si}") for s in m.scales]
        self._next_soft: dict[int, ort.InferenceSession] = {}  # opened on first use
        self._decoder = self._open("decoder")
        self._fhat_shape = (d["Cvae"], d["latent_hw"], d["latent_hw"])
        self._mod: Value | None = None
        self._x: Value | None = None
        self._past: list[Value] = []
        self._f_hat: Value | None = None
        self._si = 0

    @property
    def step_session(self):
        """The step graph's ORT session (e.g. to end its profiling)."""
        return self._step

    def int8_report(self) -> dict:
        """Where this backend's int8 numbers come from, for reports: the step session's
        kernels and why (``KernelChoice``, the CPU's int8 features included) and the
        export's u8 x s8 form (``extra.quant.u8s8``; None for an FP or older export)."""
        from sasq.exporter.u8s8 import read_record

        quant = self.manifest.extra.get("quant")
        form = read_record(quant, str(self.dir)) if isinstance(quant, dict) else None
        return {**self.int8_kernels.as_dict(), "export_u8s8": form}

    # ----- StepBackend -----

    def reset(self, label_2B: torch.Tensor) -> None:
        labels = np.ascontiguousarray(label_2B.detach().cpu().numpy().astype(np.int64))
        n = len(labels)
        if not self.manifest.dynamic_batch and n != 2 * self.manifest.batch_size:
            raise UserError(
                f"{self.dir}: exported for batch {self.manifest.batch_size}, got {n // 2} labels"
            )
        mod, x = self._start.run(["mod_BMC", "x_BlC"], {"label_2B": labels})
        zeros_f = np.zeros((n // 2, *self._fhat_shape), np.float32)
        self._mod, self._x = self._value(mod), self._value(x)
        self._past = [self._value(empty_cache(c, n)) for c in self._cache]
        self._f_hat, self._si = self._value(zeros_f), 0

    def step(self, si: int) -> torch.Tensor:
        if si != self._si:
            raise RuntimeError(f"step({si}) called at scale {self._si}")
        feeds = dict(zip(self._step_in, [self._x, self._mod, *self._past], strict=True))
        outs = self._run(self._steps[si], feeds, self._step_out + self._fetch, host={"logits"})
        n = len(self._step_out)
        if self._on_record is not None:
            known = {**feeds, **dict(zip(self._step_out + self._fetch, outs, strict=True))}
            self._on_record(si, {k: _numpy(known[k]) for k in self._record})
        self._past = outs[1:n]
        return torch.from_numpy(_numpy(outs[0]))

    def advance(self, si: int, idx_Bl: torch.Tensor, soft_BlV: torch.Tensor | None = None) -> None:
        last = si == len(self._next) - 1
        names = ["f_hat_out"] if last else ["f_hat_out", "x_BlC"]
        if soft_BlV is None:
            idx = np.ascontiguousarray(idx_Bl.detach().cpu().numpy().astype(np.int64))
            sess, feed = self._next[si], {"idx_Bl": self._value(idx)}
        else:  # more_smooth: the transition from codebook weights
            soft = np.ascontiguousarray(soft_BlV.detach().cpu().numpy().astype(np.float32))
            sess, feed = self._soft_session(si), {"soft_BlV": self._value(soft)}
        outs = self._run(sess, {**feed, "f_hat": self._f_hat}, names, host=set())
        self._f_hat = outs[0]
        if not last:
            self._x = outs[1]
        self._si = si + 1

    def image(self) -> torch.Tensor:
        (img,) = self._decoder.run(["image"], {"f_hat": _numpy(self._f_hat)})
        return torch.from_numpy(img)

    # ----- plumbing -----

    def _soft_session(self, si: int) -> ort.InferenceSession:
        if si not in self._next_soft:
            name = self.manifest.scales[si].next_soft_graph
            if name is None:
                raise UserError(
                    f"{self.dir}: exported without the more_smooth graphs (next_soft_*.onnx); "
                    "export again to sample with more_smooth"
                )
            self._next_soft[si] = self._open(f"next_soft_{si}")
        return self._next_soft[si]

    def _open(self, key: str, model: bytes | None = None) -> ort.InferenceSession:
        """A session on graph ``key`` of the export (or on ``model``, that graph edited),
        with the GPU providers' options for it."""
        path = self.dir / self.manifest.graphs[key].file
        ext = self.dir if model is not None else None
        sess, choice = open_session(
            model or path, self._session_cfg, ext, self._provider_options(key)
        )
        if key == "step":  # the int8 kernels that matter: reports record them
            self.int8_kernels = choice
        return sess

    def _provider_options(self, key: str) -> dict[str, dict[str, str]] | None:
        provider = self._session_cfg.provider
        if provider == Provider.CPU:
            return None
        from sasq.engines import ort_gpu

        opts = {"CUDAExecutionProvider": ort_gpu.cuda_options()}
        if provider == Provider.TENSORRT:
            m = self.manifest
            sha = m.files[m.graphs[key].file].sha256
            profile = ort_gpu.graph_profile(m, key, self._batch)
            cache = ort_gpu.cache_root() / "ort-trt" / sha[:16]
            int8 = "quant" in m.extra  # a Q/DQ graph (any quantized export)
            opts["TensorrtExecutionProvider"] = ort_gpu.tensorrt_options(profile, cache, int8)
        return opts

    def _value(self, a: np.ndarray) -> Value:
        """A host array as the backend keeps its state: an OrtValue on the device, or numpy."""
        if not self.io_binding or isinstance(a, ort.OrtValue):  # an fp8 cache: already one
            return a
        return ort.OrtValue.ortvalue_from_numpy(a, self._device, 0)

    def _run(
        self,
        sess: ort.InferenceSession,
        feeds: dict[str, Value],
        names: list[str],
        host: set[str],
    ) -> list[Value]:
        """Run with IO binding (outputs stay OrtValues, on the device unless in ``host``)."""
        if not self.io_binding:
            if self._fp8 and sess in self._steps:
                return sess.run_with_ort_values(names, {k: _ortvalue(v) for k, v in feeds.items()})
            return sess.run(names, feeds)
        b = sess.io_binding()
        for k, v in feeds.items():
            b.bind_ortvalue_input(k, v)
        for n in names:
            b.bind_output(n, "cpu" if n in host else self._device)
        sess.run_with_iobinding(b)
        return b.get_outputs()


_NUMPY_TYPES = {"FLOAT": np.float32, "INT8": np.int8, "FLOAT16": np.float16}


def empty_cache(c: CacheTensor, rows: int) -> Value:
    """The cache tensor ``c`` before scale 0: no tokens yet (zero length on its axis); an
    fp8 cache as an OrtValue of that type (numpy has no float8 ORT would take)."""
    if c.dtype == "FLOAT8E4M3FN":
        zeros = np.zeros(c.shape_at(0, rows), np.uint8)
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(zeros, TensorProto.FLOAT8E4M3FN)
    if c.dtype not in _NUMPY_TYPES:
        raise UserError(f"step cache {c.input}: unsupported element type {c.dtype}")
    return np.zeros(c.shape_at(0, rows), _NUMPY_TYPES[c.dtype])


def _ortvalue(v: Value) -> ort.OrtValue:
    return v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(v)


def _numpy(v: Value) -> np.ndarray:
    return v.numpy() if isinstance(v, ort.OrtValue) else v
