"""CUDA device, stream and device buffers for the TensorRT backend, without torch.

Uses NVIDIA's cuda-python runtime bindings (``cuda-bindings`` 12.x / 13.x:
``from cuda.bindings import runtime``; older cuda-python: ``from cuda import cudart``),
which is what TensorRT's own Python samples use. They are a thin layer over the CUDA
runtime API, so this module is small: pick and activate a device, one non-blocking
stream, ``cudaMalloc`` buffers, ``cudaMemcpyAsync`` between them and numpy arrays.
Every call's ``cudaError_t`` is checked; a failure raises :class:`CudaError` with the
call, the error name and CUDA's description on one line.

Host arrays are ordinary (pageable) numpy arrays: a 448² float32 frame is 2.4 MB, whose
staging copy costs far less than the forward, and pinned buffers would add lifetime
bookkeeping (and on a Jetson, host and device share the same DRAM anyway).

The names used from the bindings are listed in :data:`CUDART_API`; a test checks them
against the real 12.x and 13.x wheels, which import (and report "no driver") without a GPU.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

CUDART_API = (
    "cudaError_t", "cudaSuccess", "cudaGetErrorName", "cudaGetErrorString",
    "cudaGetDeviceCount", "cudaGetDevice", "cudaSetDevice", "cudaDriverGetVersion",
    "cudaRuntimeGetVersion", "cudaDeviceGetAttribute", "cudaDeviceAttr",
    "cudaDevAttrComputeCapabilityMajor", "cudaDevAttrComputeCapabilityMinor", "cudaGetDeviceProperties",
    "cudaStreamCreateWithFlags", "cudaStreamNonBlocking", "cudaStreamSynchronize", "cudaStreamDestroy",
    "cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaMemcpyKind",
    "cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost",
)  # fmt: skip
"""Every cuda-python runtime name used here (checked against the real 12.x and 13.x bindings)."""

_DEVICE = re.compile(r"cuda(?::(\d+))?")


class TensorRTUnavailableError(ImportError):
    """TensorRT (>= 10), the CUDA bindings or a CUDA GPU is not available."""


class CudaError(RuntimeError):
    """A CUDA runtime call failed (the message names the call and the CUDA error)."""


@functools.cache  # called by every copy and check on the forward path; a failure is not cached
def import_cudart() -> ModuleType:
    """The cuda-python runtime module, or :class:`TensorRTUnavailableError` saying what to install."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as new_exc:
        try:  # cuda-python < 12.6 (and 12.x's deprecated alias)
            from cuda import cudart
        except ImportError:
            raise TensorRTUnavailableError(
                f"the CUDA Python bindings are not installed ({new_exc}); pip install .[tensorrt] "
                "(or cuda-python of your CUDA major version, e.g. 12 on JetPack 6)"
            ) from new_exc
    return cudart


def _error_text(cudart: ModuleType, err: Any) -> str:
    name = cudart.cudaGetErrorName(err)[1]
    text = cudart.cudaGetErrorString(err)[1]
    decode = (lambda b: b.decode(errors="replace")) if isinstance(name, bytes) else str
    return f"{decode(name)} ({decode(text)})"


def check(result: Any, call: str) -> Any:
    """Unpacks a cuda-python result ``(cudaError_t, *values)``; raises :class:`CudaError` on failure.

    Returns:
        None, the single value, or a tuple of the values.
    """
    cudart = import_cudart()
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"{call} failed: {_error_text(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class CudaDevice:
    """One CUDA device, by runtime index."""

    index: int

    def __str__(self) -> str:
        return f"cuda:{self.index}"

    def activate(self) -> None:
        """Makes this device current on the calling thread (the runtime's current device is per thread)."""
        check(import_cudart().cudaSetDevice(self.index), f"cudaSetDevice({self.index})")


def parse_device(device: str) -> int | None:
    """``cuda`` -> None (the current device), ``cuda:N`` -> N; anything else is a ValueError."""
    match = _DEVICE.fullmatch(str(device).strip())
    if match is None:
        raise ValueError(
            f"the TensorRT backend runs on a CUDA GPU; got device {device!r} (use cuda or cuda:N)"
        )
    return None if match.group(1) is None else int(match.group(1))


def select_device(device: str) -> CudaDevice:
    """Validates ``cuda`` / ``cuda:N``, checks a GPU is there, makes it current and returns it.

    Raises:
        ValueError: Not a CUDA device string, or no such device index.
        TensorRTUnavailableError: No CUDA bindings, no driver or no GPU.
    """
    index = parse_device(device)
    cudart = import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        driver = cudart.cudaDriverGetVersion()[1]
        reason = _error_text(cudart, err) if err != cudart.cudaError_t.cudaSuccess else "0 devices"
        raise TensorRTUnavailableError(
            f"the TensorRT backend needs a CUDA GPU; cudaGetDeviceCount: {reason}, CUDA driver "
            f"{_cuda_version(driver) if driver else 'not found'}, bindings' runtime {runtime_version()}"
        )
    if index is None:
        index = int(check(cudart.cudaGetDevice(), "cudaGetDevice"))
    if index >= count:
        raise ValueError(
            f"device {device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )
    chosen = CudaDevice(index)
    chosen.activate()
    return chosen


def _cuda_version(number: int) -> str:
    """CUDA's ``1000 * major + 10 * minor`` encoding as ``major.minor``."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def runtime_version() -> str:
    """The CUDA runtime version the bindings were built for, ``major.minor`` (needs no driver)."""
    return _cuda_version(int(check(import_cudart().cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")))


def compute_capability(device: CudaDevice) -> str:
    """``major.minor`` compute capability of a CUDA device (e.g. ``8.7`` on Jetson Orin)."""
    cudart = import_cudart()
    attr = cudart.cudaDeviceAttr
    call = "cudaDeviceGetAttribute"
    major = check(cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device.index), call)
    minor = check(cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device.index), call)
    return f"{int(major)}.{int(minor)}"


def device_name(device: CudaDevice) -> str:
    """The GPU's marketing name (``cudaGetDeviceProperties``)."""
    props = check(import_cudart().cudaGetDeviceProperties(device.index), "cudaGetDeviceProperties")
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\0")


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``), freed by :meth:`free`."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(check(import_cudart().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))

    def free(self) -> None:
        """Releases the memory (idempotent)."""
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(import_cudart().cudaFree(ptr), "cudaFree")


class CudaStream:
    """A non-blocking CUDA stream on the current device, with host <-> device copies on it."""

    def __init__(self) -> None:
        cudart = import_cudart()
        self._stream = check(
            cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )

    @property
    def handle(self) -> int:
        """The ``cudaStream_t`` as an integer, what ``execute_async_v3`` takes."""
        return int(self._stream) if self._stream is not None else 0

    def to_device(self, dst: DeviceBuffer, array: np.ndarray) -> None:
        """Queues a copy of a C-contiguous host array into ``dst``."""
        if not array.flags.c_contiguous or array.nbytes != dst.nbytes:
            raise ValueError(f"host array of {array.nbytes} bytes for a {dst.nbytes}-byte device buffer")
        cudart = import_cudart()
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(
            cudart.cudaMemcpyAsync(dst.ptr, array.ctypes.data, array.nbytes, kind, self._stream),
            "cudaMemcpyAsync H2D",
        )

    def to_host(self, array: np.ndarray, src: DeviceBuffer) -> None:
        """Queues a copy of ``src`` into a C-contiguous, writable host array (read it after synchronize)."""
        if not (array.flags.c_contiguous and array.flags.writeable) or array.nbytes != src.nbytes:
            raise ValueError(f"host array of {array.nbytes} bytes for a {src.nbytes}-byte device buffer")
        cudart = import_cudart()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(
            cudart.cudaMemcpyAsync(array.ctypes.data, src.ptr, src.nbytes, kind, self._stream),
            "cudaMemcpyAsync D2H",
        )

    def synchronize(self) -> None:
        """Blocks until everything queued on the stream has finished."""
        check(import_cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def destroy(self) -> None:
        """Destroys the stream (idempotent)."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            check(import_cudart().cudaStreamDestroy(stream), "cudaStreamDestroy")
