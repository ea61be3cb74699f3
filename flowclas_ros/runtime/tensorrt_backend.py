"""TensorRT 10.x / 11.x inference backend: cached engine, cuda-python device buffers, one CUDA stream.

Sources, in order of convenience:
* a checkpoint directory: exported to ONNX (cached, verified; ``precision: fp16`` exports the
  float16-backbone graph) and built into a strongly typed engine (cached under its
  :class:`~flowclas_ros.runtime.engine_cache.EngineKey`, built once across processes);
* an ``.onnx`` from ``flowclas-export``: built into a cached engine;
* an ``.engine`` with its ``.json`` sidecar from ``flowclas-export --format engine``:
  loaded only if the sidecar matches this TensorRT version and GPU, else refused in one line.

A fixed-batch engine with batch N > 1 gets its last, short chunk zero-padded.
No torch: device, stream and buffers are :mod:`flowclas_ros.runtime.cuda_io` (NVIDIA's
cuda-python bindings), so ``pip install .[runtime,tensorrt]`` (or JetPack's TensorRT plus
cuda-python) runs it. An fp16 engine that was not AP-gated by ``flowclas-export --format
engine --fp16 --gate-data`` (its sidecar holds ``flowclas.quality_gate``) logs a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.model.export_meta import ExportMetadata, check_matches, parse_metadata, read_onnx_props
from flowclas_ros.runtime.base import InferenceBackend
from flowclas_ros.runtime.cuda_io import CudaDevice, CudaStream, DeviceBuffer
from flowclas_ros.runtime.engine_cache import (
    EngineCacheError,
    EngineRecord,
    engine_cache_path,
    environment_key,
    load_checked_engine,
    read_record,
    resolve_engine,
)
from flowclas_ros.runtime.tensorrt_builder import (
    build_serialized_engine,
    compute_capability,
    cuda_device,
    engine_key_here,
    import_tensorrt,
)

logger = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def _numpy_dtype(trt, dtype) -> np.dtype:
    """The numpy type of a TensorRT I/O tensor (exports have float32 I/O; the rest: hand-made engines)."""
    for name in ("float32", "float16", "int32", "int64", "int8", "uint8"):
        if dtype == getattr(trt, name):
            return np.dtype(name)
    raise TypeError(f"unsupported TensorRT I/O tensor type {dtype}")


class TensorRTBackend(InferenceBackend):
    """Runs a FlowCLAS model as a TensorRT engine on a CUDA GPU (Jetson or desktop).

    Args:
        checkpoint: Checkpoint directory (or an object with its ``.path``, e.g. a ``LoadedCheckpoint``),
            exported ``.onnx`` or ``.engine`` file.
        device: ``cuda`` (the current CUDA device, normally 0) or ``cuda:N``.
        engine_path: Engine file to use / create (default: the cache, named by the engine key).
        onnx_path: Exported ONNX to build from (default: exported into the cache on first use).
        input_size: (H, W) expected; default the checkpoint config's ``preprocess.input_size``.
        precision: ``f16`` (float16 backbone, flow and scoring float32, written into the ONNX),
            ``fp16-all`` (the flow in float16 too) or ``f32`` (the engine cache's older spellings
            ``fp16`` / ``fp32`` work too). Default (None or ``auto``): a given ``.onnx`` (source
            or ``onnx_path``) builds at the precision it was exported with; a checkpoint is
            exported at ``fp16``.
        workspace_mb: Builder workspace limit (MiB) when an engine is built.
        version_compatible: Build with ``BuilderFlag.VERSION_COMPATIBLE``.
        max_batch: Largest batch per engine call (> 1 exports / needs a dynamic-batch ONNX).
        opt_batch: The optimisation profile's ``opt`` batch (default ``max_batch``, which the node
            sets to its number of cameras).
        rebuild: Rebuild a missing or mismatched engine; False refuses it instead.
        cache_dir: Cache root (default ``$FLOWCLAS_CACHE_DIR`` or ``~/.cache/flowclas_ros``).
    """

    name = "tensorrt"

    def __init__(
        self,
        checkpoint: str | Path | Any,
        device: str = "cuda",
        *,
        engine_path: str | Path | None = None,
        onnx_path: str | Path | None = None,
        input_size: tuple[int, int] | None = None,
        precision: str | None = None,
        workspace_mb: int = 2048,
        version_compatible: bool = False,
        max_batch: int = 1,
        opt_batch: int | None = None,
        rebuild: bool = True,
        cache_dir: str | Path | None = None,
    ):
        trt = import_tensorrt()
        self._trt = trt
        cuda = cuda_device(device)
        source = Path(getattr(checkpoint, "path", checkpoint))
        precision = {"auto": None, "f32": "fp32", "f16": "fp16"}.get(precision, precision)  # registry words
        if source.suffix in ENGINE_SUFFIXES:
            engine, record = self._engine_only(source, cuda)
            meta = parse_metadata(record.metadata, source)
        else:
            engine, record, meta = self._cached_engine(
                checkpoint,
                source,
                cuda,
                engine_path=engine_path,
                onnx_path=onnx_path,
                input_size=input_size,
                build_options={
                    "precision": precision,
                    "workspace_mb": workspace_mb,
                    "version_compatible": version_compatible,
                    "max_batch": max_batch,
                    "opt_batch": opt_batch or max_batch,
                },
                rebuild=rebuild,
                cache_dir=cache_dir,
            )
        super().__init__(
            meta.identity.config, meta.identity.threshold, str(cuda), meta.identity.image_threshold
        )
        self.record = record
        self.precision = record.key.precision
        self.name = f"tensorrt-{self.precision}"  # published in every result, as openvino-<precision>
        _warn_if_ungated(source, meta, self.precision)
        self._cuda = cuda
        self._stream: CudaStream | None = None
        self._buffers: dict[int, tuple[DeviceBuffer, DeviceBuffer, np.ndarray]] = {}
        try:
            self._setup(engine, record)
        except Exception:
            self.close()  # the stream (and context) made before the failure
            raise

    def _engine_only(self, engine_path: Path, device: CudaDevice) -> tuple[bytes, EngineRecord]:
        """Loads a prebuilt engine; only this machine's TensorRT version and GPU are checked against it."""
        stored = read_record(engine_path).key
        expected = environment_key(
            stored, tensorrt_version=self._trt.__version__, compute_capability=compute_capability(device)
        )
        try:
            return load_checked_engine(engine_path, expected)
        except EngineCacheError as exc:
            raise EngineCacheError(
                f"{exc}. Rebuild it on this machine with `flowclas-export --format engine` "
                "or pass the checkpoint / ONNX instead so it can be rebuilt"
            ) from exc

    def _cached_engine(
        self,
        checkpoint: str | Path | Any,
        source: Path,
        device: CudaDevice,
        *,
        engine_path: str | Path | None,
        onnx_path: str | Path | None,
        input_size: tuple[int, int] | None,
        build_options: dict,
        rebuild: bool,
        cache_dir: str | Path | None,
    ) -> tuple[bytes, EngineRecord, ExportMetadata]:
        """Checkpoint / ONNX source: engine from the cache, built when missing or stale.

        The checkpoint's identity, the ONNX metadata and the ONNX's hash (the engine key) are each
        read once here; the engine's record carries the same metadata (its key holds the hash).
        ``build_options["precision"]`` None: a given ONNX keeps the types it was exported with, a
        checkpoint is exported with a float16 backbone.
        """
        from flowclas_ros.runtime.onnx_backend import resolve_onnx_source

        onnx_path, identity = resolve_onnx_source(
            checkpoint,
            onnx_path,
            input_size=input_size,
            dynamic_batch=build_options["max_batch"] > 1,
            cache_dir=cache_dir,
            precision=build_options["precision"] or "fp16",
        )
        props = read_onnx_props(onnx_path)
        meta = parse_metadata(props, onnx_path)
        build_options = {**build_options, "precision": build_options["precision"] or meta.precision}
        check_matches(meta, identity, input_size)
        key = engine_key_here(onnx_path, device, input_size=meta.input_size, **_key_options(build_options))
        target = Path(engine_path) if engine_path is not None else engine_cache_path(cache_dir, key)

        def build() -> bytes:
            logger.info("building TensorRT engine %s from %s (minutes on a Jetson)", target, onnx_path)
            return build_serialized_engine(onnx_path, input_size=meta.input_size, **build_options)

        engine, record = resolve_engine(target, key, build if rebuild else None, props, onnx_path)
        return engine, record, meta

    def _setup(self, engine_bytes: bytes, record: EngineRecord) -> None:
        trt = self._trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if record.key.version_compatible:
            self._runtime.engine_host_code_allowed = True  # the plan carries its lean runtime
        self._cuda.activate()
        self._stream = CudaStream()  # first: creates the device's primary context TensorRT then uses
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise EngineCacheError("TensorRT could not deserialize the engine (see the TensorRT log)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineCacheError(f"engine has inputs {inputs} and outputs {outputs}; expected one of each")
        self._input, self._output = inputs[0], outputs[0]
        self._input_dtype = _numpy_dtype(trt, self._engine.get_tensor_dtype(self._input))
        self._output_dtype = _numpy_dtype(trt, self._engine.get_tensor_dtype(self._output))
        fixed = int(self._engine.get_tensor_shape(self._input)[0])
        self._dynamic = fixed == -1
        self.max_batch = record.key.max_batch if self._dynamic else fixed

    def _io_buffers(self, batch: int) -> tuple[DeviceBuffer, DeviceBuffer, np.ndarray]:
        """Device input / output buffers and the host output array for a batch size, allocated once."""
        if batch not in self._buffers:
            height, width = self.config.preprocess.input_size
            if self._dynamic:
                self._context.set_input_shape(self._input, (batch, 3, height, width))
            out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self._output))
            host_out = np.empty(out_shape, dtype=self._output_dtype)
            inp = DeviceBuffer(batch * 3 * height * width * self._input_dtype.itemsize)
            self._buffers[batch] = (inp, DeviceBuffer(host_out.nbytes), host_out)
        return self._buffers[batch]

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        self._cuda.activate()  # the node calls predict from its worker thread, not the constructing one
        inp, out, host_out = self._io_buffers(chunk.shape[0])
        if self._dynamic:
            self._context.set_input_shape(self._input, tuple(chunk.shape))
        self._context.set_tensor_address(self._input, inp.ptr)
        self._context.set_tensor_address(self._output, out.ptr)
        self._stream.to_device(inp, np.ascontiguousarray(chunk, dtype=self._input_dtype))
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        self._stream.to_host(host_out, out)
        self._stream.synchronize()
        return host_out.astype(np.float32)  # a copy: host_out is reused by the next call

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if getattr(self, "_context", None) is None:
            raise RuntimeError("TensorRTBackend is closed")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.max_batch
        parts = []
        for i in range(0, batch.shape[0], step):
            chunk = batch[i : i + step]
            count = chunk.shape[0]
            if not self._dynamic and count < step:  # fixed-batch engine: pad, then drop the padding
                chunk = np.concatenate([chunk, np.zeros((step - count, *chunk.shape[1:]), np.float32)])
            parts.append(self._run(chunk)[:count])
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        """Releases the execution context and engine, then the device buffers and the stream (idempotent)."""
        self._context = self._engine = self._runtime = None
        buffers, self._buffers = getattr(self, "_buffers", {}), {}
        for inp, out, _ in buffers.values():
            inp.free()
            out.free()
        if getattr(self, "_stream", None) is not None:
            self._stream.destroy()
            self._stream = None


def _warn_if_ungated(source: Path, meta: ExportMetadata, precision: str) -> None:
    """Warns, like the OpenVINO backend, when a reduced-precision engine has no passed AP gate."""
    if precision == "fp32" or (meta.quality.get(precision) or {}).get("passed"):
        return
    logger.warning(
        "%s: TensorRT precision %s was not AP-gated for this engine; gate it with flowclas-export "
        "--format engine --fp16 --gate-data ROOT",
        source,
        precision,
    )


def _key_options(build_options: dict) -> dict:
    return {k: build_options[k] for k in ("precision", "max_batch", "opt_batch", "version_compatible")}
