"""OpenVINO inference backend: runs the ``flowclas-export`` ONNX on CPU, GPU or NPU at f32, bf16 or int8.

The precision is always set explicitly (``INFERENCE_PRECISION_HINT``): OpenVINO's
CPU default on AMX / AVX-512-BF16 machines is bf16, which moved the demo map by
3.5 % of its range. ``int8`` runs the quantised export (``flowclas-export
--format openvino --precision int8``, NNCF post-training quantisation, AP-gated);
its non-quantised ops run in bf16 where the device has it, else f32, as gated at export.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.model.checkpoint_meta import format_size
from flowclas_ros.model.export_meta import (
    INPUT_NAME,
    ModelMismatchError,
    check_matches,
    parse_metadata,
    read_onnx_props,
)
from flowclas_ros.runtime.base import InferenceBackend
from flowclas_ros.runtime.cpu import native_precisions, openvino_capabilities, unsupported_precision_message
from flowclas_ros.runtime.onnx_backend import resolve_onnx_source
from flowclas_ros.runtime.registry import canonical_precision
from flowclas_ros.runtime.threads import openvino_options

logger = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16", "int8")
"""What runs; ``auto`` (:func:`choose_precision`) picks one of them per CPU and export."""


class OpenVINODeviceError(ValueError):
    """The requested OpenVINO device is not present (the message lists the available ones)."""


def import_openvino() -> Any:
    """``import openvino`` with a one-line hint when it is missing."""
    try:
        import openvino
    except ImportError as exc:
        raise ImportError(f"OpenVINO is not installed ({exc}); pip install openvino") from exc
    return openvino


def ov_device(core: Any, device: str) -> str:
    """Maps ``cpu`` / ``GPU`` / ``gpu.1`` / ``NPU`` to an available OpenVINO device name.

    Raises:
        OpenVINODeviceError: The device is not available (lists those that are).
    """
    name = device.upper().replace(":", ".")
    available = list(core.available_devices)
    if name == "AUTO" or name in available or any(d.startswith(f"{name}.") for d in available):
        return name
    raise OpenVINODeviceError(
        f"OpenVINO device {device!r} is not available on this machine; available: {', '.join(available)}"
    )


def device_capabilities(core: Any, device: str) -> tuple[str, ...]:
    """``OPTIMIZATION_CAPABILITIES`` of an OpenVINO device.

    The CPU's come through :mod:`flowclas_ros.runtime.cpu`, so tests can stand in for a CPU without bf16.
    """
    base = device.split(".")[0]
    if base == "CPU":
        return openvino_capabilities(core) or ()
    return tuple(sorted(str(c) for c in core.get_property(base, "OPTIMIZATION_CAPABILITIES")))


def compile_options(core: Any, device: str, precision: str, threads: int | None) -> dict[str, Any]:
    """``compile_model`` properties: explicit inference precision, latency hint, thread settings.

    On the CPU the threads are explicit (:func:`flowclas_ros.runtime.threads.openvino_options`):
    ``INFERENCE_NUM_THREADS`` (default: the CPUs this process may use), one stream, and
    ``ENABLE_CPU_PINNING`` off, so a second process on the same cores shares them instead of
    being halved by pinned threads.

    Raises:
        ValueError: Unknown precision, or bf16 on a device without it (names the CPU's
            capabilities and suggests ``auto``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of auto, {', '.join(PRECISIONS)}, got {precision!r}")
    capabilities = set(device_capabilities(core, device))
    if precision == "bf16" and "BF16" not in capabilities:
        if device.split(".")[0] == "CPU":
            raise ValueError(unsupported_precision_message("bf16"))
        raise ValueError(
            f"OpenVINO {device} has no bf16 support (capabilities: {', '.join(sorted(capabilities))}); "
            "use precision auto or f32"
        )
    if precision == "int8":  # quantised ops run int8; the rest in the best gated float type
        hint = "bf16" if "BF16" in capabilities else "f32"
    else:
        hint = precision
    options: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if device.split(".")[0] == "CPU":
        options |= openvino_options(threads)
    elif threads is not None:
        options["INFERENCE_NUM_THREADS"] = int(threads)
    return options


def native_on(core: Any, device: str) -> tuple[str, ...]:
    """Precisions ``device`` runs natively (the CPU's: :func:`flowclas_ros.runtime.cpu.native_precisions`)."""
    caps = device_capabilities(core, device)
    if device.split(".")[0] == "CPU":
        return native_precisions(caps)
    return ("f32", *(p for p, cap in (("bf16", "BF16"), ("int8", "INT8")) if cap in caps))


def choose_precision(
    graph_precision: str, quality: dict[str, Any], native: tuple[str, ...]
) -> tuple[str, str]:
    """``precision: auto``: what to run an export at, and why (one line, for the log and /diagnostics).

    bf16 where the device runs it natively and the export passed the bf16 AP gate; int8 for a
    quantised export (``flowclas-export`` writes one only after its int8 AP gate passed; int8
    runs only that graph); else f32.

    Args:
        graph_precision: The export's ``flowclas.precision`` (``fp32`` or ``int8``).
        quality: The export's AP-gate record (``flowclas.quality_gate``).
        native: :func:`native_on` of the device.
    """
    if graph_precision == "int8":
        gate = quality.get("int8") or {}
        passed = (
            f"passed the int8 AP gate (|ΔAP| {abs(gate['delta']):.4f})" if gate.get("passed") else "ungated"
        )
        return "int8", f"the export is quantised ({passed})"
    bf16 = quality.get("bf16") or {}
    if "bf16" not in native:
        return "f32", f"no native bf16 on this device (runs {', '.join(native)}); the export is not int8"
    if bf16.get("passed"):
        return "bf16", f"native bf16 and the export passed the bf16 AP gate (|ΔAP| {abs(bf16['delta']):.4f})"
    if bf16:
        return "f32", "native bf16, but the export failed the bf16 AP gate"
    return "f32", (
        "native bf16, but the export has no bf16 AP gate (flowclas-export --format openvino "
        "--precision auto --gate-data ROOT gates it)"
    )


class OpenVINOBackend(InferenceBackend):
    """Runs a ``flowclas-export`` ONNX model with OpenVINO.

    Args:
        checkpoint: Checkpoint directory (its cached export is used, made on first use) or an
            exported ``.onnx`` (config and thresholds from its metadata).
        device: ``cpu`` / ``CPU`` (default), ``GPU``, ``GPU.1``, ``NPU`` or ``AUTO``.
        precision: ``auto`` (:func:`choose_precision`: bf16 where native and gated, int8 for a
            quantised export, else f32; the reason is ``precision_reason``), ``f32``, ``bf16``
            or ``int8`` (the last needs the quantised export).
        onnx_path: Exported model to run with a checkpoint directory.
        input_size: (H, W) expected; default the checkpoint config's ``preprocess.input_size``.
        threads: CPU inference threads: ``auto`` / None = the CPUs this process may use
            (:mod:`flowclas_ros.runtime.threads`).
        dynamic_batch: When exporting into the cache, make the batch axis dynamic.
        cache_dir: Cache root (default ``$FLOWCLAS_CACHE_DIR`` or ``~/.cache/flowclas_ros``).

    Raises:
        OpenVINODeviceError: Absent device.
        ModelMismatchError: The ONNX file belongs to another checkpoint / input size, or ``int8``
            was asked of an export that is not quantised (or the reverse).
    """

    name = "openvino"

    def __init__(
        self,
        checkpoint: str | Path | Any,
        device: str = "cpu",
        *,
        precision: str = "auto",
        onnx_path: str | Path | None = None,
        input_size: tuple[int, int] | None = None,
        threads: int | str | None = None,
        dynamic_batch: bool = False,
        cache_dir: str | Path | None = None,
    ):
        ov = import_openvino()
        core = ov.Core()
        device_name = ov_device(core, "CPU" if device.lower() == "cpu" else device)
        precision = canonical_precision(precision)
        if precision != "auto":  # a precision the device lacks fails before any export
            compile_options(core, device_name, precision, threads)
        onnx_file, identity = resolve_onnx_source(
            checkpoint, onnx_path, input_size=input_size, dynamic_batch=dynamic_batch, cache_dir=cache_dir
        )
        self.onnx_path = Path(onnx_file)
        meta = parse_metadata(read_onnx_props(self.onnx_path), self.onnx_path)
        check_matches(meta, identity, input_size)
        self.precision_reason = "asked for"
        if precision == "auto":
            precision, self.precision_reason = choose_precision(
                meta.precision, meta.quality, native_on(core, device_name)
            )
            self.precision_reason = f"auto: {self.precision_reason}"
            logger.info("%s: precision auto -> %s (%s)", self.onnx_path, precision, self.precision_reason)
        options = compile_options(core, device_name, precision, threads)
        if (precision == "int8") != (meta.precision == "int8"):
            raise ModelMismatchError(
                f"{self.onnx_path} is a {meta.precision} export but precision {precision} was asked; int8 "
                "runs only the quantised export (flowclas-export --format openvino --precision int8), "
                "which runs only as int8"
            )
        gate = meta.quality.get(precision) if precision != "f32" else {"passed": True}
        if not (gate or {}).get("passed"):
            logger.warning(
                "%s: precision %s was not AP-gated for this export; gate it with flowclas-export --format "
                "openvino --precision %s --gate-data ROOT",
                self.onnx_path,
                precision,
                precision,
            )
        model = core.read_model(str(self.onnx_path))
        self._check_graph_input(model, meta.input_size)
        self.compiled = core.compile_model(model, device_name, options)
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        super().__init__(
            meta.identity.config, meta.identity.threshold, device_name, meta.identity.image_threshold
        )
        self.name = f"openvino-{precision}"  # published in every result and in the diagnostics

    def _check_graph_input(self, model: Any, input_size: tuple[int, int]) -> None:
        """The graph's real input must agree with its metadata (catches hand-edited files)."""
        inputs = model.inputs
        if len(inputs) != 1 or inputs[0].get_any_name() != INPUT_NAME:
            raise ModelMismatchError(f"{self.onnx_path}: expected one input named {INPUT_NAME!r}")
        shape = inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        if len(dims) != 4 or tuple(dims[1:]) != (3, *input_size):
            raise ModelMismatchError(
                f"{self.onnx_path}: graph input {shape} disagrees with its metadata size "
                f"{format_size(input_size)}"
            )
        self._fixed_batch = dims[0]

    def describe(self) -> str:
        """``openvino-bf16 on CPU (inference precision bf16; auto: ...)``: for logs and diagnostics."""
        return (
            f"{self.name} on {self.device} (inference precision {self.inference_precision}; "
            f"{self.precision_reason})"
        )

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self.request is None:
            raise RuntimeError("OpenVINOBackend is closed")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self._fixed_batch or len(batch)
        parts = []
        for i in range(0, len(batch), step):
            self.request.infer({0: batch[i : i + step]})
            parts.append(self.request.get_output_tensor(0).data.copy())  # the tensor is reused next call
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def close(self) -> None:
        """Drops the compiled model."""
        self.request = None
        self.compiled = None
