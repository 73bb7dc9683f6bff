"""TensorRT's I/O contract on the CPU: a stand-in engine whose math is ONNX Runtime's.

No machine here has a GPU, so the TensorRT backend's first contact with a real engine
would be its first test. This module makes the CPU enforce the contract that backend
relies on, with the same calls (the subset of ``tensorrt``'s Python API it uses:
``ICudaEngine`` and ``IExecutionContext`` by the same method names), so the backend's code
runs unchanged here and on a GPU. The rules, each from TensorRT's documentation:

- ``set_input_shape`` refuses a shape outside the active optimization profile's
  [min, max] (and returns False, as TensorRT does); switching profiles forgets the shapes.
- ``execute_async_v3`` needs every input's shape and every I/O tensor's address; an
  address must be non-null even for an empty tensor ("a binding of an empty tensor still
  needs at least one byte of memory", developer guide, Empty Tensors) and lie inside live
  device memory for the tensor's whole byte size; an output may not overlap any input or
  other output (enqueue reads and writes them concurrently).
- Strongly typed: I/O element types are exactly the ONNX graph's; outputs come back in
  them.

Device memory (``SimMemory``) is host memory behind integer addresses with cudaMalloc's
habits: ``malloc(0)`` gives the null address, ``free`` poisons the bytes (0xFF: NaN in
floats) and keeps the range marked dead, so a read of freed memory is refused rather than
silently reading stale data. The math is ONNX Runtime on the CPU over the same step graph,
so a simulated engine's logits equal the ORT backend's bit for bit.
"""

from __future__ import annotations

import bisect
import json
from enum import Enum
from pathlib import Path

import numpy as np

from sasq.errors import UserError

SIM_FORMAT = "sasq-trt-sim-engine"
_ALIGN = 256  # cudaMalloc's alignment


class SimContractError(RuntimeError):
    """The caller broke TensorRT's I/O contract (a sasq bug, not a user mistake)."""


class TensorIOMode(Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(Enum):
    FLOAT = "FLOAT"
    HALF = "FLOAT16"
    INT8 = "INT8"
    INT32 = "INT32"
    INT64 = "INT64"
    BOOL = "BOOL"
    FP8 = "FLOAT8E4M3FN"


def nptype(dt: DataType) -> type:
    """numpy type of a TensorRT data type (``tensorrt.nptype``'s counterpart)."""
    if dt == DataType.FP8:
        import ml_dtypes

        return ml_dtypes.float8_e4m3fn
    return _NP[dt]


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
       DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_}  # fmt: skip


class SimMemory:
    """Device memory as host buffers at integer addresses (``DeviceMemory`` protocol)."""

    def __init__(self):
        self.stream = 1  # any non-zero handle: work runs synchronously
        self._bases: list[int] = []  # sorted
        self._blocks: dict[int, np.ndarray] = {}
        self._dead: set[int] = set()
        self._next = 1 << 32

    def malloc(self, nbytes: int) -> int:
        if nbytes < 0:
            raise SimContractError(f"malloc({nbytes})")
        if nbytes == 0:
            return 0  # cudaMalloc(0) hands back a null pointer
        base = self._next
        self._next += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN + _ALIGN  # a gap between blocks
        bisect.insort(self._bases, base)
        self._blocks[base] = np.zeros(nbytes, np.uint8)
        return base

    def free(self, ptr: int) -> None:
        if ptr == 0:
            return
        if ptr not in self._blocks or ptr in self._dead:
            raise SimContractError(f"free of {ptr:#x}: not a live allocation")
        self._blocks[ptr][:] = 0xFF
        self._dead.add(ptr)

    def view(self, ptr: int, nbytes: int, what: str) -> np.ndarray:
        """The bytes [ptr, ptr + nbytes) of one live allocation, or ``SimContractError``."""
        if ptr == 0:
            raise SimContractError(f"{what}: null address")
        i = bisect.bisect_right(self._bases, ptr) - 1
        base = self._bases[i] if i >= 0 else None
        if base is None or ptr + nbytes > base + len(self._blocks[base]):
            raise SimContractError(f"{what}: {nbytes} bytes at {ptr:#x} are not device memory")
        if base in self._dead:
            raise SimContractError(f"{what}: address {ptr:#x} was freed")
        return self._blocks[base][ptr - base : ptr - base + nbytes]

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        if host.nbytes:
            self.view(ptr, host.nbytes, "copy to device")[:] = host.reshape(-1).view(np.uint8)

    def to_host(self, ptr: int, host: np.ndarray) -> None:
        if host.nbytes:
            host.reshape(-1).view(np.uint8)[:] = self.view(ptr, host.nbytes, "copy to host")

    def synchronize(self) -> None:
        pass


class SimEngine:
    """An ``ICudaEngine`` over an ONNX step graph: I/O names and types from the graph, one
    optimization profile per entry of ``profiles`` (name -> (min, opt, max) shapes)."""

    def __init__(self, onnx_path: Path, profiles: list[dict[str, tuple]], memory: SimMemory):
        import onnx

        from sasq.engines.ort_session import SessionConfig, open_session

        model = onnx.load(str(onnx_path), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        elem = {v: onnx.TensorProto.DataType.Name(v) for v in onnx.TensorProto.DataType.values()}
        self._io: dict[str, tuple[TensorIOMode, DataType]] = {}
        for mode, values in ((TensorIOMode.INPUT, model.graph.input),
                             (TensorIOMode.OUTPUT, model.graph.output)):  # fmt: skip
            for v in values:
                if v.name not in inits:
                    self._io[v.name] = (mode, DataType(elem[v.type.tensor_type.elem_type]))
        self._names = list(self._io)
        for p in profiles:
            inputs = {n for n, (m, _) in self._io.items() if m == TensorIOMode.INPUT}
            if set(p) != inputs:
                raise UserError(f"{onnx_path}: a profile must give every input, got {sorted(p)}")
        self.profiles = [{n: tuple(map(tuple, s)) for n, s in p.items()} for p in profiles]
        self.memory = memory
        # exact int8 kernels on every CPU are ORT's session policy; MatMulAddFusion off as
        # in every int8 session
        cfg = SessionConfig.for_int8()
        self.session, self.kernels = open_session(onnx_path, cfg)

    @classmethod
    def from_plan(cls, plan: Path, onnx_dir: Path, memory: SimMemory) -> SimEngine:
        from sasq.plain_names import inside

        try:
            d = json.loads(plan.read_text())
            assert d["format"] == SIM_FORMAT and isinstance(d["profiles"], list)
            onnx_path = inside(onnx_dir, d["onnx"], plan)
        except (OSError, ValueError, KeyError, TypeError, AssertionError, RecursionError):
            raise UserError(f"{plan}: not a simulated engine; use sasq build --rebuild") from None
        return cls(onnx_path, d["profiles"], memory)

    # ----- the ICudaEngine calls the backend makes -----
    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def get_tensor_name(self, i: int) -> str:
        return self._names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._io[name][0] if name in self._io else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._io[name][1]

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return list(self.profiles[profile][name])

    def create_execution_context(self) -> SimContext:
        return SimContext(self)


class SimContext:
    """An ``IExecutionContext``: profile, input shapes and addresses, then execute."""

    def __init__(self, engine: SimEngine):
        self.engine = engine
        self.profile = 0  # the first context of an engine starts at profile 0
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addr: dict[str, int] = {}
        self._out_shapes: dict[tuple, dict[str, tuple[int, ...]]] = {}

    def _inputs(self) -> list[str]:
        e = self.engine
        return [n for n in e._names if e.get_tensor_mode(n) == TensorIOMode.INPUT]

    def _outputs(self) -> list[str]:
        e = self.engine
        return [n for n in e._names if e.get_tensor_mode(n) == TensorIOMode.OUTPUT]

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        if not 0 <= index < self.engine.num_optimization_profiles or not stream:
            return False
        if index != self.profile:
            self._shapes.clear()  # shapes belong to a profile: set them again
        self.profile = index
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(int(d) for d in shape)
        if self.engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return False
        lo, _, hi = self.engine.profiles[self.profile][name]
        if len(shape) != len(lo) or any(
            not a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True)
        ):
            return False  # TensorRT logs "... not in the range of profile" and refuses
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            return self._shapes.get(name, (-1,))
        missing = [n for n in self._inputs() if n not in self._shapes]
        if missing:
            return (-1,)
        return self._output_shapes()[name]

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        key = tuple(self._shapes[n] for n in self._inputs())
        if key not in self._out_shapes:  # TensorRT infers them; here a run on zeros does
            e = self.engine
            feeds = {n: _ort_value(np.zeros(self._shapes[n], nptype(e.get_tensor_dtype(n))),
                                   e.get_tensor_dtype(n)) for n in self._inputs()}  # fmt: skip
            outs = [o.numpy() for o in e.session.run_with_ort_values(self._outputs(), feeds)]
            self._out_shapes[key] = {n: o.shape for n, o in zip(self._outputs(), outs, strict=True)}
        return self._out_shapes[key]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
            return False
        self._addr[name] = int(ptr)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addr.get(name, 0)

    def execute_async_v3(self, stream: int) -> bool:
        e, mem = self.engine, self.engine.memory
        if not stream:
            raise SimContractError("execute_async_v3 needs a stream")
        missing = [n for n in self._inputs() if n not in self._shapes]
        if missing:
            raise SimContractError(f"input shapes not set for profile {self.profile}: {missing}")
        shapes = {**self._shapes, **self._output_shapes()}
        spans = {}
        for name in e._names:
            itemsize = np.dtype(nptype(e.get_tensor_dtype(name))).itemsize
            nbytes = int(np.prod(shapes[name])) * itemsize
            ptr = self._addr.get(name, 0)
            if ptr == 0:
                raise SimContractError(
                    f"{name}: null address (TensorRT needs a non-null address for every I/O "
                    "tensor, an empty one included)"
                )
            mem.view(ptr, max(nbytes, 1), name)  # live device memory for its whole size
            spans[name] = (ptr, ptr + max(nbytes, 1))
        for out in self._outputs():
            for other, (a, b) in spans.items():
                lo, hi = spans[out]
                if other != out and lo < b and a < hi:
                    raise SimContractError(f"output {out} overlaps {other} in device memory")
        feeds = {}
        for n in self._inputs():
            dt = nptype(e.get_tensor_dtype(n))
            host = np.empty(shapes[n], dt)
            mem.to_host(self._addr[n], host)
            feeds[n] = _ort_value(host, e.get_tensor_dtype(n))
        outs = [o.numpy() for o in e.session.run_with_ort_values(self._outputs(), feeds)]
        for n, o in zip(self._outputs(), outs, strict=True):
            want = np.dtype(nptype(e.get_tensor_dtype(n)))
            if e.get_tensor_dtype(n) == DataType.FP8 and o.dtype == np.uint8:
                o = o.view(want)  # ORT hands float8 back as its raw bytes
            if o.dtype != want or o.shape != shapes[n]:
                raise SimContractError(f"{n}: graph gave {o.dtype}{o.shape}, engine says {want}")
            mem.to_device(self._addr[n], o)
        return True


def _ort_value(host: np.ndarray, dt: DataType):
    """An ORT input: numpy has no float8 ORT takes, so fp8 goes in as typed raw bytes."""
    import onnxruntime as ort
    from onnx import TensorProto

    if dt == DataType.FP8:
        raw = np.ascontiguousarray(host).view(np.uint8)
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, TensorProto.FLOAT8E4M3FN)
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(host))


def write_sim_engine(plan: Path, onnx_file: str, profiles: list[dict[str, tuple]]) -> None:
    """The simulated engine file: the step graph it runs and its profiles."""
    listed = [{n: [list(s) for s in v] for n, v in p.items()} for p in profiles]
    body = {"format": SIM_FORMAT, "onnx": onnx_file, "profiles": listed}
    plan.write_text(json.dumps(body, indent=1) + "\n")
