"""Typed settings of ``anomaly_node`` built from its parameter values (no rclpy).

:mod:`flowclas_ros.ros.params` declares and validates the parameters; this module turns
their values into what the node uses: the immutable :class:`RuntimeSettings` snapshot the
worker reads per batch, the camera / depth inputs and the backend options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowclas_ros.ros.params import COMPRESSED_SUFFIX
from flowclas_ros.runtime import registry
from flowclas_ros.runtime.decision import image_threshold_in_use

if TYPE_CHECKING:  # imported in depth_settings: keeps launch files free of numpy/OpenCV
    from flowclas_ros.runtime.geometry3d import DepthSettings


@dataclass(frozen=True)
class RuntimeSettings:
    """The runtime parameters, as one immutable snapshot the worker reads per batch."""

    threshold: float
    image_threshold: float
    max_batch: int
    batch_wait_ms: float
    publish_score_map: bool
    publish_mask: bool
    publish_overlay: bool
    overlay_alpha: float
    overlay_score_range: tuple[float, float] | None
    min_region_area: int
    max_regions: int
    drop_warn_fraction: float
    depth: DepthSettings
    publish_points: bool
    publish_markers: bool
    depth_sync_tolerance_ns: int
    marker_lifetime_s: float  # 0 = automatic (two frame periods)


@dataclass(frozen=True)
class CheckpointThresholds:
    """The thresholds a loaded model brings (``InferenceBackend.threshold`` / ``image_threshold``)."""

    threshold: float | None
    image_threshold: float | None = None


@dataclass(frozen=True)
class CameraInput:
    """One input camera: its topic, message kind and output namespace."""

    topic: str
    compressed: bool
    name: str


def effective_thresholds(values: dict[str, Any], checkpoint: CheckpointThresholds) -> tuple[float, float]:
    """(pixel, image) thresholds in use: the parameters, or where NaN the checkpoint's.

    An older checkpoint without an ``image_threshold`` falls back to the pixel threshold
    (the former rule: the max of the map against the pixel threshold).

    Raises:
        ValueError: NaN ``threshold`` and no calibrated threshold in the checkpoint.
    """
    threshold = float(values["threshold"])
    if math.isnan(threshold):
        if checkpoint.threshold is None or not math.isfinite(checkpoint.threshold):
            raise ValueError("the checkpoint has no calibrated threshold; set the 'threshold' parameter")
        threshold = float(checkpoint.threshold)
    image_threshold = float(values["image_threshold"])
    if math.isnan(image_threshold):
        in_use = image_threshold_in_use(checkpoint.image_threshold, threshold)
        image_threshold = threshold if in_use is None else in_use  # never None: threshold is set
    return threshold, image_threshold


def runtime_settings(values: dict[str, Any], checkpoint: CheckpointThresholds) -> RuntimeSettings:
    """Builds the runtime snapshot from parameter values.

    Args:
        values: Parameter name -> value (at least every runtime parameter).
        checkpoint: The loaded checkpoint's calibrated thresholds (used where a threshold
            parameter is NaN, see :func:`effective_thresholds`).

    Raises:
        ValueError: NaN threshold and no calibrated threshold in the checkpoint.
    """
    threshold, image_threshold = effective_thresholds(values, checkpoint)
    low, high = (float(v) for v in values["overlay_score_range"])
    return RuntimeSettings(
        threshold=threshold,
        image_threshold=image_threshold,
        max_batch=int(values["max_batch"]),
        batch_wait_ms=float(values["batch_wait_ms"]),
        publish_score_map=bool(values["publish_score_map"]),
        publish_mask=bool(values["publish_mask"]),
        publish_overlay=bool(values["publish_overlay"]),
        overlay_alpha=float(values["overlay_alpha"]),
        overlay_score_range=None if low == high == 0.0 else (low, high),
        min_region_area=int(values["min_region_area"]),
        max_regions=int(values["max_regions"]),
        drop_warn_fraction=float(values["drop_warn_fraction"]),
        depth=depth_settings(values),
        publish_points=bool(values["publish_points"]),
        publish_markers=bool(values["publish_markers"]),
        depth_sync_tolerance_ns=int(round(float(values["depth_sync_tolerance"]) * 1e9)),
        marker_lifetime_s=float(values["marker_lifetime_s"]),
    )


def depth_settings(values: dict[str, Any]) -> DepthSettings:
    """The depth parameters as :class:`DepthSettings` (its checks are the cross-field validation).

    Raises:
        ValueError: E.g. ``min_range >= max_range``; the message names the parameters.
    """
    from flowclas_ros.runtime.geometry3d import DepthSettings

    return DepthSettings(
        depth_scale=float(values["depth_scale"]),
        min_range=float(values["min_range"]),
        max_range=float(values["max_range"]),
        voxel_size=float(values["voxel_size"]),
    )


@dataclass(frozen=True)
class DepthInput:
    """The depth and CameraInfo topics of one camera."""

    depth_topic: str
    info_topic: str


def depth_inputs(
    depth_topics: list[str], info_topics: list[str], image_topics: list[str]
) -> list[DepthInput | None]:
    """Per camera: its depth inputs, or None (no 3D for that camera).

    Args:
        depth_topics: ``depth_topics`` (one per image topic, '' = none), or empty/None: no 3D at all.
        info_topics: ``camera_info_topics`` (one per image topic).
        image_topics: ``image_topics``.

    Raises:
        ValueError: Wrong list lengths, or a depth topic without a CameraInfo topic.
    """
    if not any(str(t).strip("/") for t in depth_topics):
        return [None] * len(image_topics)
    if len(depth_topics) != len(image_topics):
        raise ValueError(
            f"depth_topics has {len(depth_topics)} entries but image_topics has {len(image_topics)}; "
            "give one per image topic ('' for a camera without depth) or leave it empty"
        )
    infos = list(info_topics or [])
    if len(infos) != len(image_topics):
        raise ValueError(
            f"camera_info_topics has {len(infos)} entries but image_topics has {len(image_topics)}; "
            "give one per image topic (the colour camera's CameraInfo, '' where there is no depth)"
        )
    out: list[DepthInput | None] = []
    for image, depth, info in zip(image_topics, depth_topics, infos):
        if not str(depth).strip("/"):
            out.append(None)
        elif not str(info).strip("/"):
            raise ValueError(
                f"camera_info_topics: empty for {image!r}, which has depth topic {depth!r}; "
                "3D points need the colour camera's CameraInfo"
            )
        else:
            out.append(DepthInput(str(depth), str(info)))
    return out


def camera_inputs(topics: list[str], compressed: list[bool] | None, names: list[str]) -> list[CameraInput]:
    """Pairs each topic with its message kind and camera name.

    Args:
        topics: ``image_topics``.
        compressed: ``compressed`` (one per topic), or empty/None to derive it from a
            trailing ``/compressed``.
        names: Resolved camera names (see :func:`flowclas_ros.ros.naming.resolve_camera_names`).

    Raises:
        ValueError: ``compressed`` has the wrong length.
    """
    if compressed:
        if len(compressed) != len(topics):
            raise ValueError(
                f"compressed has {len(compressed)} entries but image_topics has {len(topics)}; "
                "give one per topic or leave it empty (auto: topics ending in /compressed)"
            )
        flags = [bool(flag) for flag in compressed]
    else:
        flags = [topic.rstrip("/").endswith(COMPRESSED_SUFFIX) for topic in topics]
    return [CameraInput(topic, flag, name) for topic, flag, name in zip(topics, flags, names)]


def backend_options(
    kind: str,
    input_size: list[int],
    max_batch: int,
    num_cameras: int,
    precision: str = "auto",
    num_threads: int | str = "auto",
) -> dict[str, Any]:
    """Keyword options for :func:`flowclas_ros.runtime.create_backend`, from the node parameters.

    What each backend takes is its row of the backend table (:mod:`flowclas_ros.runtime.registry`):
    a backend that builds its model for one size (ONNX Runtime, OpenVINO, TensorRT) gets the
    ``input_size`` override and a batch > 1 (several cameras); the torch backend takes any size
    (the node sets its ``preprocess.input_size`` after loading).

    Raises:
        ValueError: Unknown backend, or a precision it does not run.
    """
    size = None if list(input_size) == [0, 0] else (int(input_size[0]), int(input_size[1]))
    batch = min(int(max_batch), num_cameras)
    return registry.backend_options(kind, precision, num_threads, size, batch)


def check_backend_choice(values: dict[str, Any]) -> str | None:
    """Cross-field check of ``backend`` / ``device`` / ``precision`` (one line), or None.

    The precision must be one the backend's table row lists; ``bf16`` for OpenVINO on the CPU
    needs a CPU that runs it (the error names the CPU's capabilities and suggests ``auto``).
    """
    kind, precision = values["backend"], values["precision"]
    reason = registry.check_precision(kind, precision)
    if reason:
        return f"{reason} (backend {kind})"
    device = str(values["device"]).upper()
    if kind == "openvino" and precision == "bf16" and device == "CPU":
        from flowclas_ros.runtime import cpu

        if "BF16" not in (cpu.openvino_capabilities() or ()):
            return cpu.unsupported_precision_message("bf16")
    return None
