"""The parameters of ``anomaly_node``: one table, validation and the typed settings (no rclpy).

:data:`PARAMETERS` is the single source of truth: the node declares exactly
these (with descriptors built from them), ``config/anomaly.yaml`` sets their
defaults and the launch-file check compares against :func:`parameter_names`.

Two kinds of parameters:

* **runtime** ones (threshold, overlay options, region filter, batch size,
  ...) can be changed at any time; a bad value is rejected with a reason and
  the old value stays;
* **configure-time** ones (checkpoint, backend, topics, QoS, ...) are read in
  the lifecycle ``configure`` transition; changing them is only accepted while
  the node is unconfigured (``deactivate`` + ``cleanup`` first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported in depth_settings: keeps this table free of numpy/OpenCV for launch files
    from flowclas_ros.runtime.geometry3d import DepthSettings

BACKEND_KINDS = ("torch", "onnxruntime", "openvino", "tensorrt")
RELIABILITY = ("best_effort", "reliable")
COMPRESSED_SUFFIX = "/compressed"


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter.

    Attributes:
        name: Parameter name.
        type: ``bool``, ``integer``, ``double``, ``string`` or ``<one of those>_array``.
        default: Default value; None declares an (empty) array parameter without a value,
            because ROS parameters cannot hold a typed empty list.
        description: Shown by ``ros2 param describe``.
        runtime: Changeable while the node is configured or active.
        low: Inclusive lower bound (numbers and number arrays).
        high: Inclusive upper bound.
        choices: Allowed string values.
    """

    name: str
    type: str
    default: Any
    description: str
    runtime: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


PARAMETERS: tuple[ParamSpec, ...] = (
    # --- model (configure-time) ---
    ParamSpec(
        "checkpoint",
        "string",
        "",
        "Checkpoint directory (or exported model file for onnxruntime/openvino/tensorrt).",
    ),
    ParamSpec("backend", "string", "torch", "Inference backend.", choices=BACKEND_KINDS),
    ParamSpec(
        "device", "string", "cpu", "Inference device: cpu, cuda or cuda:N (openvino: CPU, GPU or NPU)."
    ),
    ParamSpec(
        "precision",
        "string",
        "f32",
        "openvino inference precision: f32, bf16 or int8 (int8 needs the quantised export).",
        choices=("f32", "bf16", "int8"),
    ),
    ParamSpec(
        "input_size",
        "integer_array",
        [0, 0],
        "Model input [height, width] override; [0, 0] uses the checkpoint's.",
        low=0,
        high=4096,
    ),
    # --- inputs (configure-time) ---
    ParamSpec("image_topics", "string_array", ["/camera/image_raw"], "Input image topics, one per camera."),
    ParamSpec(
        "compressed",
        "bool_array",
        None,
        "Per topic: subscribe sensor_msgs/CompressedImage. Empty: true for topics ending in /compressed.",
    ),
    ParamSpec(
        "camera_names",
        "string_array",
        None,
        "Per topic: output namespace ~/<name>/. Empty: derived from the topic (see README).",
    ),
    ParamSpec(
        "qos_reliability", "string", "best_effort", "Input subscription reliability.", choices=RELIABILITY
    ),
    ParamSpec("qos_depth", "integer", 1, "Input subscription history depth.", low=1, high=100),
    ParamSpec(
        "max_image_side",
        "integer",
        8192,
        "Frames with a larger width or height are rejected as malformed.",
        low=16,
        high=16384,
    ),
    ParamSpec(
        "no_frame_warning_s",
        "double",
        5.0,
        "Seconds after activation without a frame before the likely causes are logged.",
        low=0.5,
        high=3600.0,
    ),
    ParamSpec("diagnostics_period_s", "double", 1.0, "Period of /diagnostics.", low=0.1, high=60.0),
    # --- depth / 3D inputs (configure-time) ---
    ParamSpec(
        "depth_topics",
        "string_array",
        None,
        "Per image topic: aligned depth image (16UC1 mm / 32FC1 m); '' = no 3D for that camera. "
        "Empty: no 3D outputs at all.",
    ),
    ParamSpec(
        "camera_info_topics",
        "string_array",
        None,
        "Per image topic: sensor_msgs/CameraInfo of the colour camera; required where depth_topics is set.",
    ),
    # --- runtime ---
    ParamSpec(
        "threshold",
        "double",
        math.nan,
        "Per-pixel anomaly threshold (score >= threshold is anomalous); NaN uses the checkpoint's.",
        runtime=True,
    ),
    ParamSpec(
        "prompt_set",
        "string",
        "",
        "VL4AD prompt set (a name in config/prompts or a YAML path) for a checkpoint with a text scorer, "
        "torch backend; empty leaves the current set (at start: the checkpoint's). "
        "The text is re-encoded once per change.",
        runtime=True,
    ),
    ParamSpec(
        "max_batch",
        "integer",
        4,
        "Most frames (cameras) scored in one forward.",
        runtime=True,
        low=1,
        high=64,
    ),
    ParamSpec(
        "batch_wait_ms",
        "double",
        20.0,
        "With several cameras: wait up to this long (and at most one forward) for the "
        "other cameras' frames, so frames triggered together share one forward.",
        runtime=True,
        low=0.0,
        high=1000.0,
    ),
    ParamSpec("publish_score_map", "bool", True, "Publish ~/<camera>/score_map (32FC1).", runtime=True),
    ParamSpec("publish_mask", "bool", True, "Publish ~/<camera>/mask (mono8 0/255).", runtime=True),
    ParamSpec("publish_overlay", "bool", True, "Publish ~/<camera>/overlay (rgb8).", runtime=True),
    ParamSpec(
        "overlay_alpha", "double", 0.5, "Heat-map weight at the top score.", runtime=True, low=0.0, high=1.0
    ),
    ParamSpec(
        "overlay_score_range",
        "double_array",
        [0.0, 0.0],
        "[low, high] scores mapped to the colour map's ends; [0, 0] uses each frame's range.",
        runtime=True,
    ),
    ParamSpec(
        "min_region_area",
        "integer",
        16,
        "Regions with fewer anomalous pixels are not reported.",
        runtime=True,
        low=1,
        high=100_000_000,
    ),
    ParamSpec(
        "max_regions",
        "integer",
        32,
        "Most regions per result (the largest).",
        runtime=True,
        low=0,
        high=10_000,
    ),
    ParamSpec(
        "drop_warn_fraction",
        "double",
        0.5,
        "Diagnostics warn when more than this fraction of a camera's frames is dropped.",
        runtime=True,
        low=0.0,
        high=1.0,
    ),
    # --- depth / 3D (runtime) ---
    ParamSpec(
        "depth_scale",
        "double",
        0.0,
        "Metres per raw depth unit; 0 uses REP-118 (16UC1: 0.001, 32FC1: 1).",
        runtime=True,
        low=0.0,
        high=1000.0,
    ),
    ParamSpec(
        "min_range", "double", 0.0, "Depth (z, m) below which a pixel is invalid.", runtime=True, low=0.0
    ),
    ParamSpec(
        "max_range", "double", 10.0, "Depth (z, m) above which a pixel is invalid.", runtime=True, low=0.0
    ),
    ParamSpec(
        "voxel_size",
        "double",
        0.0,
        "Voxel edge (m) for downsampling ~/<camera>/anomaly_points; 0 keeps every point.",
        runtime=True,
        low=0.0,
        high=100.0,
    ),
    ParamSpec(
        "publish_points", "bool", True, "Publish ~/<camera>/anomaly_points (PointCloud2).", runtime=True
    ),
    ParamSpec(
        "publish_markers", "bool", True, "Publish ~/<camera>/anomaly_markers (MarkerArray).", runtime=True
    ),
    ParamSpec(
        "depth_sync_tolerance",
        "double",
        0.02,
        "Largest stamp difference (s) between a colour frame and its depth image; else no 3D for it.",
        runtime=True,
        low=0.0,
        high=10.0,
    ),
    # --- start-up ---
    ParamSpec("autostart", "bool", True, "Configure and activate at start (plain ros2 run works)."),
)
"""Every parameter ``anomaly_node`` declares (``use_sim_time`` is rclpy's own)."""

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}
BUILTIN_PARAMETERS = ("use_sim_time",)


def parameter_names() -> set[str]:
    """Names the node accepts: :data:`PARAMETERS` plus rclpy's built-ins."""
    return set(SPECS) | set(BUILTIN_PARAMETERS)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(name: str, value: Any) -> str | None:
    """Checks one value against its spec and the cross-field rules.

    Returns:
        None when valid, else the reason (one line, names the parameter).
    """
    spec = SPECS.get(name)
    if spec is None:
        return f"unknown parameter {name!r}"
    if value is None:
        return None if spec.default is None else f"{name}: a value is required"
    items = list(value) if spec.type.endswith("_array") else [value]
    for item in items:
        if spec.choices and item not in spec.choices:
            return f"{name}: {item!r} is not one of {', '.join(spec.choices)}"
        if _is_number(item):
            if spec.type.startswith("double") and math.isinf(item):
                return f"{name}: must be finite, got {item}"
            if math.isnan(item) and name != "threshold":
                return f"{name}: must not be NaN"
            if spec.low is not None and item < spec.low:
                return f"{name}: {item} is below the minimum {spec.low:g}"
            if spec.high is not None and item > spec.high:
                return f"{name}: {item} is above the maximum {spec.high:g}"
    if name == "input_size" and (len(items) != 2 or (0 in items and items != [0, 0])):
        return f"input_size: expected [height, width] > 0, or [0, 0] for the checkpoint's, got {items}"
    if name == "overlay_score_range" and (len(items) != 2 or (items[0] >= items[1] and items != [0.0, 0.0])):
        return (
            f"overlay_score_range: expected [low, high] with low < high, or [0, 0] for automatic, got {items}"
        )
    if name == "image_topics" and (not items or any(not str(t).strip("/") for t in items)):
        return f"image_topics: expected at least one non-empty topic name, got {items}"
    return None


@dataclass(frozen=True)
class RuntimeSettings:
    """The runtime parameters, as one immutable snapshot the worker reads per batch."""

    threshold: float
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


@dataclass(frozen=True)
class CameraInput:
    """One input camera: its topic, message kind and output namespace."""

    topic: str
    compressed: bool
    name: str


def runtime_settings(values: dict[str, Any], checkpoint_threshold: float | None) -> RuntimeSettings:
    """Builds the runtime snapshot from parameter values.

    Args:
        values: Parameter name -> value (at least every runtime parameter).
        checkpoint_threshold: The loaded checkpoint's calibrated threshold (used when the
            ``threshold`` parameter is NaN).

    Raises:
        ValueError: NaN threshold and no calibrated threshold in the checkpoint.
    """
    threshold = float(values["threshold"])
    if math.isnan(threshold):
        if checkpoint_threshold is None or not math.isfinite(checkpoint_threshold):
            raise ValueError("the checkpoint has no calibrated threshold; set the 'threshold' parameter")
        threshold = float(checkpoint_threshold)
    low, high = (float(v) for v in values["overlay_score_range"])
    return RuntimeSettings(
        threshold=threshold,
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
    depth_topics: list[str] | None, info_topics: list[str] | None, image_topics: list[str]
) -> list[DepthInput | None]:
    """Per camera: its depth inputs, or None (no 3D for that camera).

    Args:
        depth_topics: ``depth_topics`` (one per image topic, '' = none), or empty/None: no 3D at all.
        info_topics: ``camera_info_topics`` (one per image topic).
        image_topics: ``image_topics``.

    Raises:
        ValueError: Wrong list lengths, or a depth topic without a CameraInfo topic.
    """
    if not depth_topics or not any(str(t).strip("/") for t in depth_topics):
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
    kind: str, input_size: list[int], max_batch: int, num_cameras: int, precision: str = "f32"
) -> dict[str, Any]:
    """Keyword options for :func:`flowclas_ros.runtime.create_backend`, from the node parameters.

    ONNX Runtime / TensorRT build their model for an input size and batch, so an
    ``input_size`` override and a batch > 1 (several cameras) are passed to them; the torch
    backend takes any size (the node sets its ``preprocess.input_size`` after loading).
    """
    options: dict[str, Any] = {}
    if kind == "torch":
        return options
    if list(input_size) != [0, 0]:
        options["input_size"] = (int(input_size[0]), int(input_size[1]))
    if kind == "openvino":
        options["precision"] = precision
    batch = min(int(max_batch), num_cameras)
    if batch > 1 and kind in ("onnxruntime", "openvino"):
        options["dynamic_batch"] = True
    elif batch > 1:
        options["max_batch"] = batch
    return options
