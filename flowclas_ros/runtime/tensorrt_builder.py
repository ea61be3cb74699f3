"""TensorRT 10.x and 11.x engine builder, one code path: strongly typed network from a typed ONNX.

TensorRT 11 removed weakly typed networks (``BuilderFlag.FP16``, per-layer
precision constraints, ``ILayer.set_output_type``); 10.x (JetPack 6 ships 10.3) has
both. This builder uses only what both have: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``,
so every tensor keeps the type the ONNX gives it. Reduced precision is therefore
chosen at export (``flowclas-export --fp16``: backbone float16, flow and scoring
float32, :mod:`flowclas_ros.export.fp16`), not here; no precision flag or constraint is
set on any version, so there is nothing for TensorRT 10 to *prefer* over the
graph's types.

The names of the TensorRT Python API used here and in the backend are listed in
:data:`TRT_API`; a test checks them against the real 10.x and 11.x wheels.
``tensorrt`` is imported lazily so the rest of the package works without it; the CUDA
device comes from :mod:`flowclas_ros.runtime.cuda_io` (cuda-python, no torch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from flowclas_ros.runtime.cuda_io import (
    CudaDevice,
    TensorRTUnavailableError,
    compute_capability,
)
from flowclas_ros.runtime.cuda_io import select_device as cuda_device  # noqa: F401 - CLI, benchmark
from flowclas_ros.runtime.engine_cache import EngineKey, make_engine_key

logger = logging.getLogger(__name__)

TRT_API = (
    # module level
    "Builder", "Logger", "OnnxParser", "Runtime", "WARNING", "__version__",
    "NetworkDefinitionCreationFlag", "STRONGLY_TYPED", "BuilderFlag", "VERSION_COMPATIBLE",
    "MemoryPoolType", "WORKSPACE", "TensorIOMode", "INPUT", "OUTPUT",
    "float32", "float16", "int32", "int64", "int8", "uint8",
    # builder / network / parser / config / profile
    "create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network",
    "parse_from_file", "num_errors", "get_error", "num_inputs", "num_outputs", "get_input",
    "set_memory_pool_limit", "set_flag", "set_shape", "add_optimization_profile",
    # runtime / engine / context
    "deserialize_cuda_engine", "engine_host_code_allowed", "create_execution_context", "num_io_tensors",
    "get_tensor_name", "get_tensor_mode", "get_tensor_dtype", "get_tensor_shape", "set_input_shape",
    "set_tensor_address", "execute_async_v3",
)  # fmt: skip
"""Every TensorRT Python name the builder and backend touch (checked against the real wheels)."""

REMOVED_IN_11 = (
    "FP16",
    "PREFER_PRECISION_CONSTRAINTS",
    "OBEY_PRECISION_CONSTRAINTS",
    "set_output_type",
    "platform_has_fast_fp16",
    "EXPLICIT_BATCH",
)
"""Weak-typing API that TensorRT 11 dropped: never used here (a test checks the source)."""

ONNX_PRECISIONS = ("fp32", "fp16", "fp16-all")


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build the engine."""


def import_tensorrt() -> ModuleType:
    """Imports ``tensorrt`` (>= 10) or raises :class:`TensorRTUnavailableError` with what to do."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT is not installed (import tensorrt: {exc}); on a Jetson use JetPack 6 "
            "(TensorRT 10, apt python3-libnvinfer), elsewhere `pip install .[tensorrt]`; or use the "
            "onnxruntime / openvino backend"
        ) from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise TensorRTUnavailableError(f"TensorRT {trt.__version__} found; flowclas_ros needs TensorRT >= 10")
    return trt


def onnx_precision(onnx_path: str | Path) -> str:
    """The precision an exported ONNX computes in (its ``flowclas.precision`` metadata; none = fp32)."""
    from flowclas_ros.model.export_meta import KEY_PRECISION, read_onnx_props

    return read_onnx_props(onnx_path).get(KEY_PRECISION, "fp32")


def require_precision(onnx_path: str | Path, precision: str) -> None:
    """Raises :class:`EngineBuildError` (one line) unless the ONNX was exported at ``precision``."""
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"precision must be one of {ONNX_PRECISIONS}, got {precision!r}")
    typed = onnx_precision(onnx_path)
    if typed != precision:
        flag = {"fp32": "without --fp16", "fp16": "with --fp16", "fp16-all": "with --fp16 --fp16-flow"}
        raise EngineBuildError(
            f"{onnx_path}: the ONNX computes in {typed}, not {precision}; a strongly typed TensorRT build "
            f"keeps the graph's types, so export it {flag[precision]}"
        )


def engine_key_here(
    onnx_path: str | Path,
    device: CudaDevice,
    *,
    input_size: tuple[int, int],
    precision: str,
    max_batch: int,
    opt_batch: int,
    version_compatible: bool,
) -> EngineKey:
    """The key an engine built on this machine (TensorRT version, GPU) from ``onnx_path`` would have."""
    trt = import_tensorrt()
    return make_engine_key(
        onnx_path,
        input_size=input_size,
        precision=precision,
        max_batch=max_batch,
        opt_batch=opt_batch,
        version_compatible=version_compatible,
        tensorrt_version=trt.__version__,
        compute_capability=compute_capability(device),
    )


def profile_shapes(
    batch_dim: int, max_batch: int, opt_batch: int, chw: tuple[int, int, int]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(min, opt, max) input shapes of the optimisation profile; None for a fixed-batch graph.

    ``opt`` is the batch the node sends most: one frame per camera, so the number of cameras
    (clamped to 1..max_batch); TensorRT tunes its kernels for that shape.
    """
    if batch_dim != -1:
        return None
    top = max(1, int(max_batch))
    opt = min(max(1, int(opt_batch)), top)
    return (1, *chw), (opt, *chw), (top, *chw)


def strongly_typed_flags(trt: ModuleType) -> int:
    """``create_network`` flags: strongly typed (the only mode in 11.x; explicit batch is implied in 10+)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_serialized_engine(
    onnx_path: str | Path,
    *,
    input_size: tuple[int, int],
    precision: str = "fp16",
    workspace_mb: int = 2048,
    version_compatible: bool = False,
    max_batch: int = 1,
    opt_batch: int | None = None,
) -> bytes:
    """Builds a strongly typed TensorRT engine from an exported ONNX file.

    Args:
        onnx_path: ``flowclas-export`` ONNX file (input ``(1, N or batch, 3, H, W)``).
        input_size: (H, W) the ONNX takes.
        precision: What the ONNX must compute in: ``fp32``, ``fp16`` (``flowclas-export --fp16``)
            or ``fp16-all``; checked against its metadata (the builder cannot change it).
        workspace_mb: Builder workspace memory pool limit, in MiB.
        version_compatible: Set ``BuilderFlag.VERSION_COMPATIBLE`` (runs on later TensorRT of the
            same major version).
        max_batch: Largest batch (a dynamic-batch ONNX gets a profile 1..max_batch).
        opt_batch: The profile's ``opt`` batch, normally the number of cameras (default max_batch).

    Returns:
        The serialized engine.

    Raises:
        TensorRTUnavailableError: No TensorRT >= 10.
        EngineBuildError: Parse or build failure, an ONNX input or precision that does not match.
    """
    trt = import_tensorrt()
    require_precision(onnx_path, precision)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {errors}")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise EngineBuildError(
            f"{onnx_path}: expected 1 input and 1 output, got {network.num_inputs}/{network.num_outputs}"
        )
    input_tensor = network.get_input(0)
    height, width = input_size
    shape = tuple(input_tensor.shape)
    if len(shape) != 4 or tuple(shape[1:]) != (3, height, width):
        raise EngineBuildError(f"{onnx_path}: input shape {shape} is not (batch, 3, {height}, {width})")
    if max_batch > 1 and shape[0] != -1 and shape[0] < max_batch:
        raise EngineBuildError(
            f"{onnx_path}: max_batch {max_batch} needs an ONNX exported with --dynamic-batch "
            f"(this one has a fixed batch of {shape[0]})"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) * 2**20)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    shapes = profile_shapes(shape[0], max_batch, opt_batch or max_batch, (3, height, width))
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_tensor.name, *shapes)
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"{onnx_path}: TensorRT failed to build the engine (see the TensorRT log above)"
        )
    return bytes(serialized)
