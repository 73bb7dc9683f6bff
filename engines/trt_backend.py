"""The TensorRT backend of the decoding loop: the step graph as TensorRT engines.

The small graphs around the step (start tokens, per-scale transition, VQVAE decoder) run
under ONNX Runtime exactly as in ``OrtBackend``, which this class extends; ``step`` runs
the engine of the scale's step graph with the scale's optimization profile.

The backend owns every device buffer the engine reads or writes, allocated once at the
plan's largest batch and largest scale:

- the KV cache as two buffers per cache tensor (ping-pong): a step reads ``past_*`` from
  one and writes ``present_*`` into the other, then they swap, so an output never overlaps
  an input (enqueue reads and writes concurrently) and no buffer is ever resized under a
  running step. A runner's output views (polygraphy's output allocator keeps one buffer
  per output and reallocates it as shapes grow) are never fed back as inputs.
- scale 0's empty past cache is bound to those same non-null buffers: TensorRT needs a
  non-null address even for an empty tensor.
- the step's token embeddings, the modulation (uploaded once per generation) and the
  logits, the only tensor that comes back to the host.

Device memory comes from ``trt_device.CudaMemory`` (polygraphy's CUDA wrapper, no CUDA
torch); a simulated plan (``sasq build --simulate``) runs the same code over
``trt_sim``'s engine and memory, which enforce TensorRT's I/O contract on the CPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from sasq.engines.ort_backend import OrtBackend, _numpy
from sasq.engines.ort_session import SessionConfig
from sasq.engines.trt_plan import check_plan, engine_file, load_plan_info, scale_shapes
from sasq.errors import UserError


class TrtBackend(OrtBackend):
    name = "trt"

    def __init__(self, onnx_dir: str | Path, plan: str | Path):
        plan = Path(plan)
        if not plan.is_file():
            raise UserError(f"{plan}: no such TensorRT plan (build it with sasq build)")
        info = load_plan_info(plan)
        super().__init__(onnx_dir, SessionConfig(), io_binding=False, load_step=False)
        from sasq.engines.trt_engine import runtime_identity

        check_plan(info, plan, self.manifest, runtime_identity(info.simulated))
        self.batch_range = info.batch
        self.simulated = info.simulated
        self._api, self._mem, engines = _open(info, plan, self.dir)
        self._graph_of: dict[int, tuple[str, int]] = {}  # scale -> (engine key, profile)
        self._ctx = {}
        for key, entry in info.engines.items():
            self._ctx[key] = engines[key].create_execution_context()
            for p, si in enumerate(entry.scales):
                self._graph_of[si] = (key, p)
        self._engines = engines
        self._alloc_buffers()

    # ----- buffers -----

    def _alloc_buffers(self) -> None:
        """Every I/O tensor's buffer at its largest size over the scales, at the plan's
        largest batch; cache tensors get two (ping-pong)."""
        rows = 2 * self.batch_range.max
        need: dict[str, int] = {}
        for si in range(len(self.manifest.scales)):
            ctx, engine = self._select(si, rows)
            for name in [*self._step_in, *self._step_out]:
                shape = tuple(ctx.get_tensor_shape(name))
                if min(shape, default=0) < 0:
                    raise RuntimeError(f"TensorRT gave no shape for {name} at scale {si}")
                nbytes = int(np.prod(shape)) * self._itemsize(engine, name)
                need[name] = max(need.get(name, 1), nbytes)
        names = [*self._step_in, *self._step_out]
        self._dtype = {n: self._np_type(e, n) for e in self._engines.values() for n in names}
        self._buf = {n: self._mem.malloc(b) for n, b in need.items() if n not in self._cache_out}
        # ping-pong: past of cache i lives in _cur[i]; present goes to _other[i]
        self._cur = [self._mem.malloc(max(need[c.input], need[c.output])) for c in self._cache]
        self._other = [self._mem.malloc(max(need[c.input], need[c.output])) for c in self._cache]

    @property
    def _cache_out(self) -> set[str]:
        return {c.output for c in self._cache}

    def _select(self, si: int, rows: int):
        """Activate scale si's profile and set its input shapes; the context and engine."""
        key, profile = self._graph_of[si]
        ctx, engine = self._ctx[key], self._engines[key]
        if not ctx.set_optimization_profile_async(profile, self._mem.stream):
            raise RuntimeError(f"TensorRT refused optimization profile {profile} (scale {si})")
        for name, shape in scale_shapes(self.manifest, rows, si).items():
            if not ctx.set_input_shape(name, shape):
                self.batch_range.check(rows // 2, f"step {si}")  # the user's batch, if that
                raise RuntimeError(f"TensorRT refused input {name} shape {shape} at scale {si}")
        return ctx, engine

    def _np_type(self, engine, name: str):
        dt = engine.get_tensor_dtype(name)
        try:
            return np.dtype(self._api.nptype(dt))
        except (TypeError, KeyError):  # tensorrt.nptype knows no fp8/bf16: they stay bytes here
            return np.dtype(_BYTES_OF[str(dt).rsplit(".", 1)[-1].upper()])

    def _itemsize(self, engine, name: str) -> int:
        return self._np_type(engine, name).itemsize

    def close(self) -> None:
        """Free the device buffers (also done when the backend is collected)."""
        mem = getattr(self, "_mem", None)
        if mem is None:
            return
        for ptr in [*getattr(self, "_buf", {}).values(), *getattr(self, "_cur", []),
                    *getattr(self, "_other", [])]:  # fmt: skip
            mem.free(ptr)
        self._buf, self._cur, self._other, self._mem = {}, [], [], None

    def __del__(self):
        # at interpreter shutdown the CUDA wrapper may already be gone
        with contextlib.suppress(Exception):
            self.close()

    def int8_report(self) -> dict:
        """Where this backend's int8 numbers come from (reports): TensorRT's own kernels, or
        in the simulator the ONNX Runtime kernels its engine's session chose."""
        if not self.simulated:
            return {"kernels": "tensorrt", "reason": "TensorRT engine (int32 accumulation)"}
        k = next(iter(self._engines.values())).kernels.as_dict()
        return k | {"reason": f"contract simulator on ONNX Runtime: {k['reason']}"}

    # ----- StepBackend -----

    def reset(self, label_2B: torch.Tensor) -> None:
        self.batch_range.check(len(label_2B) // 2, "generate")
        super().reset(label_2B)
        self._mem.to_device(self._buf["mod_BMC"], self._host(_numpy(self._mod), "mod_BMC"))

    def step(self, si: int) -> torch.Tensor:
        if si != self._si:
            raise RuntimeError(f"step({si}) called at scale {self._si}")
        x = _numpy(self._x)
        ctx, _ = self._select(si, len(x))
        self._mem.to_device(self._buf["x_BlC"], self._host(x, "x_BlC"))
        addresses = {"x_BlC": self._buf["x_BlC"], "mod_BMC": self._buf["mod_BMC"],
                     "logits": self._buf["logits"]}  # fmt: skip
        for i, c in enumerate(self._cache):
            addresses[c.input], addresses[c.output] = self._cur[i], self._other[i]
        for name, ptr in addresses.items():
            if not ctx.set_tensor_address(name, ptr):
                raise RuntimeError(f"TensorRT refused the address of {name}")
        if not ctx.execute_async_v3(self._mem.stream):
            raise RuntimeError(f"TensorRT failed to run scale {si} (see its log above)")
        logits = np.empty(tuple(ctx.get_tensor_shape("logits")), self._dtype["logits"])
        self._mem.to_host(self._buf["logits"], logits)
        self._cur, self._other = self._other, self._cur
        return torch.from_numpy(logits.astype(np.float32, copy=False))

    def _host(self, a: np.ndarray, name: str) -> np.ndarray:
        """A host array in the engine's type for ``name`` (strongly typed: no implicit casts)."""
        return np.ascontiguousarray(a, dtype=self._dtype[name])


# Types numpy cannot hold: the backend only moves them between device buffers (the KV
# cache), so a same-sized integer type sizes and copies them.
_BYTES_OF = {"FP8": np.uint8, "FLOAT8E4M3FN": np.uint8, "BF16": np.uint16}


def _open(info, plan: Path, onnx_dir: Path):
    """(the tensorrt-like API module, device memory, engines by step graph key)."""
    if info.simulated:
        from sasq.engines import trt_sim
        from sasq.engines.trt_sim import SimEngine, SimMemory

        mem = SimMemory()
        engines = {k: SimEngine.from_plan(engine_file(plan, k), onnx_dir, mem)
                   for k in info.engines}  # fmt: skip
        return trt_sim, mem, engines
    from sasq.engines.trt_device import CudaMemory, require_tensorrt

    trt = require_tensorrt()
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes

    mem = CudaMemory()
    engines = {k: EngineFromBytes(BytesFromPath(str(engine_file(plan, k))))() for k in info.engines}
    return trt, mem, engines
