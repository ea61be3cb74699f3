"""TensorRT 10 engine builder: ONNX -> serialized engine (FP16, workspace limit, optional VERSION_COMPATIBLE).

Uses only the TensorRT 10 Python API (``trt.Builder``, ``trt.OnnxParser``,
``IBuilderConfig.set_memory_pool_limit``, ``build_serialized_network``); the
implicit-batch / binding APIs removed in TensorRT 10 are not used. Written
for JetPack 6 (TensorRT 10.3) and later 10.x. ``tensorrt`` is imported lazily
so the rest of the package works without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import torch

from flowclas_ros.runtime.engine_cache import EngineKey, make_engine_key

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "/backbone/"
"""The exporter names ONNX nodes (and so TensorRT layers) by module path: ``/backbone/...`` for the
backbone, ``/norm/...``, ``/flow/...`` or ``/<op>`` for the flow and scoring."""


class TensorRTUnavailableError(ImportError):
    """TensorRT (>= 10) or a CUDA GPU is not available."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build the engine."""


def import_tensorrt() -> ModuleType:
    """Imports ``tensorrt`` (>= 10) or raises :class:`TensorRTUnavailableError` with what to do."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT is not installed (import tensorrt: {exc}); on a Jetson use JetPack 6 "
            "(TensorRT 10, apt python3-libnvinfer), elsewhere `pip install tensorrt`; or use the "
            "onnxruntime / torch backend"
        ) from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise TensorRTUnavailableError(f"TensorRT {trt.__version__} found; flowclas_ros needs TensorRT >= 10")
    return trt


def cuda_device(device: str) -> torch.device:
    """Validates a CUDA device string (``cuda`` / ``cuda:N``) and returns it with an explicit index."""
    torch_device = torch.device(device)
    if torch_device.type != "cuda":
        raise ValueError(
            f"the TensorRT backend runs on a CUDA GPU; got device {device!r} (use cuda or cuda:N)"
        )
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "the TensorRT backend needs a CUDA GPU; torch.cuda.is_available() is False"
        )
    index = torch_device.index if torch_device.index is not None else torch.cuda.current_device()
    return torch.device("cuda", index)


def compute_capability(device: torch.device) -> str:
    """``major.minor`` compute capability of a CUDA device (e.g. ``8.7`` on Jetson Orin)."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def engine_key_here(
    onnx_path: str | Path,
    device: torch.device,
    *,
    input_size: tuple[int, int],
    precision: str,
    max_batch: int,
    fp32_flow: bool,
    version_compatible: bool,
) -> EngineKey:
    """The key an engine built on this machine (TensorRT version, GPU) from ``onnx_path`` would have."""
    trt = import_tensorrt()
    return make_engine_key(
        onnx_path,
        input_size=input_size,
        precision=precision,
        max_batch=max_batch,
        fp32_flow=fp32_flow,
        version_compatible=version_compatible,
        tensorrt_version=trt.__version__,
        compute_capability=compute_capability(device),
    )


def _keep_flow_fp32(trt: ModuleType, network, config) -> int:
    """Constrains every float layer outside the backbone (norm, flow, scoring) to fp32.

    Mirrors the torch backend: reduced precision for the backbone only, because
    the flow's likelihoods are sensitive to it. Returns the number of layers constrained.
    """
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    constrained = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if not layer.name.startswith("/") or layer.name.startswith(BACKBONE_PREFIX):
            continue  # backbone, or a node the ONNX constant folder added (backbone reshapes / transposes)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if not outputs or any(out.dtype != trt.float32 for out in outputs):
            continue  # shape / index / bool layers keep their types
        layer.precision = trt.float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.float32)
        constrained += 1
    return constrained


def build_serialized_engine(
    onnx_path: str | Path,
    *,
    input_size: tuple[int, int],
    precision: str = "fp16",
    workspace_mb: int = 2048,
    version_compatible: bool = False,
    max_batch: int = 1,
    fp32_flow: bool = True,
) -> bytes:
    """Builds a TensorRT engine from an exported ONNX file.

    Args:
        onnx_path: ``flowclas-export`` ONNX file (input ``(1 or batch, 3, H, W)``).
        input_size: (H, W) the ONNX takes.
        precision: ``fp16`` (``BuilderFlag.FP16``) or ``fp32``.
        workspace_mb: Builder workspace memory pool limit, in MiB.
        version_compatible: Set ``BuilderFlag.VERSION_COMPATIBLE`` (runs on later TensorRT 10.x).
        max_batch: > 1 adds an optimisation profile batch 1..max_batch (ONNX needs a dynamic batch).
        fp32_flow: With fp16, keep the flow and scoring layers in fp32.

    Returns:
        The serialized engine.

    Raises:
        TensorRTUnavailableError: No TensorRT >= 10.
        EngineBuildError: Parse or build failure, or an ONNX input that does not match.
    """
    trt = import_tensorrt()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
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
    dynamic = shape[0] == -1
    if max_batch > 1 and not dynamic:
        raise EngineBuildError(
            f"{onnx_path}: max_batch {max_batch} needs an ONNX exported with --dynamic-batch"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) * 2**20)
    if precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated attribute in late 10.x
            logger.warning("this GPU has no fast fp16; building an fp16 engine anyway")
        config.set_flag(trt.BuilderFlag.FP16)
        if fp32_flow:
            logger.info("kept %d flow / scoring layers in fp32", _keep_flow_fp32(trt, network, config))
    elif precision != "fp32":
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if dynamic:
        profile = builder.create_optimization_profile()
        one = (1, 3, height, width)
        profile.set_shape(input_tensor.name, one, one, (max(1, int(max_batch)), 3, height, width))
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"{onnx_path}: TensorRT failed to build the engine (see the TensorRT log above)"
        )
    return bytes(serialized)
