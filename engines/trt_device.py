"""Where TensorRT runs: the GPU gate and device memory, without CUDA PyTorch.

A TensorRT user's venv usually holds CPU torch (or none): the GPU is found through the CUDA
runtime that polygraphy's CUDA wrapper loads (libcudart via ctypes), the GPU's name through
``cudaGetDeviceProperties``, and device memory, copies and streams through the same wrapper
(``polygraphy.cuda``). Nothing here imports torch.

``CudaMemory`` is the interface the TensorRT backend allocates, copies and synchronizes
through; ``sasq.engines.trt_sim.SimMemory`` implements the same one over host memory, so
the backend's code is the same on a GPU and in the contract simulator.
"""

from __future__ import annotations

import ctypes
import importlib.util
from typing import Protocol

import numpy as np

from sasq.errors import UserError

TRT_MISSING = "TensorRT is not installed: pip install 'sasq[gpu]'"
GPU_MISSING = "no CUDA GPU is visible to this process (TensorRT needs one)"
CUDART_MISSING = (
    "the CUDA runtime (libcudart) could not be loaded: install the NVIDIA driver and CUDA 12"
)


class GpuUnavailableError(UserError):
    """TensorRT or a GPU is missing: reported as exactly that, one line, exit 2."""


class DeviceMemory(Protocol):
    """What the backend needs from a device: bytes at an address, copies, one stream."""

    stream: int

    def malloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def to_device(self, ptr: int, host: np.ndarray) -> None: ...

    def to_host(self, ptr: int, host: np.ndarray) -> None: ...

    def synchronize(self) -> None: ...


def _cudart():
    """polygraphy's CUDA wrapper, or ``GpuUnavailableError``."""
    try:
        from polygraphy import cuda

        return cuda.wrapper()
    except Exception:  # polygraphy raises its own exception type when libcudart is absent
        raise GpuUnavailableError(CUDART_MISSING) from None


def gpu_count() -> int:
    """CUDA devices visible to this process (0 where the driver or runtime is missing)."""
    try:
        handle = _cudart().handle
    except GpuUnavailableError:
        return 0
    n = ctypes.c_int(0)
    return n.value if handle.cudaGetDeviceCount(ctypes.byref(n)) == 0 else 0


def gpu_name(device: int = 0) -> str:
    """The GPU's name from ``cudaGetDeviceProperties``: ``name`` is the struct's first
    field, char[256], in every CUDA version; the buffer is far larger than the struct."""
    handle = _cudart().handle
    props = ctypes.create_string_buffer(16384)
    fn = getattr(handle, "cudaGetDeviceProperties_v2", None) or handle.cudaGetDeviceProperties
    if fn(props, ctypes.c_int(device)) != 0:
        raise GpuUnavailableError(GPU_MISSING)
    return props.raw[:256].split(b"\0", 1)[0].decode(errors="replace")


def require_tensorrt():
    """The tensorrt module, or ``GpuUnavailableError`` saying what is missing. The GPU is
    found through the CUDA runtime, not through torch (which is often a CPU build)."""
    if importlib.util.find_spec("tensorrt") is None:
        raise GpuUnavailableError(TRT_MISSING)
    if gpu_count() == 0:
        raise GpuUnavailableError(GPU_MISSING)
    import tensorrt as trt

    return trt


class CudaMemory:
    """Device memory, copies and one stream through polygraphy's CUDA wrapper."""

    def __init__(self):
        from polygraphy import cuda

        self._cuda = cuda
        self._wrapper = cuda.wrapper()
        self._stream = cuda.Stream()
        self.stream = self._stream.ptr

    def malloc(self, nbytes: int) -> int:
        return self._wrapper.malloc(nbytes)

    def free(self, ptr: int) -> None:
        self._wrapper.free(ptr)

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        self._wrapper.memcpy(ptr, host.ctypes.data, host.nbytes,
                             self._cuda.MemcpyKind.HostToDevice, self.stream)  # fmt: skip
        # the host array may be freed as soon as we return: finish the copy first
        self._stream.synchronize()

    def to_host(self, ptr: int, host: np.ndarray) -> None:
        self._wrapper.memcpy(host.ctypes.data, ptr, host.nbytes,
                             self._cuda.MemcpyKind.DeviceToHost, self.stream)  # fmt: skip
        self._stream.synchronize()

    def synchronize(self) -> None:
        self._stream.synchronize()
