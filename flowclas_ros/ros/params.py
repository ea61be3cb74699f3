"""The parameters of ``anomaly_node``: one table and its validation (no rclpy, no numpy).

:data:`PARAMETERS` is the single source of truth: the node declares exactly
these (with descriptors built from them, :mod:`flowclas_ros.ros.declare`),
``config/anomaly.yaml`` sets their defaults, the README table and the launch-file
check compare against it. :mod:`flowclas_ros.ros.settings` turns values into settings.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowclas_ros.runtime import registry


def backend_kinds() -> tuple[str, ...]:
    """The ``backend`` parameter's choices: every row of the backend table, read when asked."""
    return registry.backend_names()


BACKEND_KINDS = backend_kinds()
"""The built-in backends (the table at import); :func:`backend_kinds` also sees later registrations."""
RELIABILITY = ("best_effort", "reliable")
COMPRESSED_SUFFIX = "/compressed"


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter.

    Attributes:
        name: Parameter name.
        type: ``bool``, ``integer``, ``double``, ``string`` or ``<one of those>_array``.
        default: Default value (every parameter has one, so ``ros2 param dump`` / ``get`` list
            them all; an empty array is declared with its type and set to ``[]``).
        description: Shown by ``ros2 param describe``.
        runtime: Changeable while the node is configured or active.
        low: Inclusive lower bound (numbers and number arrays).
        high: Inclusive upper bound.
        choices: Allowed string values, or a function returning them (read at every check:
            the backend table can grow after import).
        dynamic: Accepts a string or an integer (``num_threads``: ``auto`` or N).
    """

    name: str
    type: str
    default: Any
    description: str
    runtime: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    dynamic: bool = False

    def allowed(self) -> tuple[str, ...]:
        """The allowed string values now (empty: any)."""
        return self.choices() if callable(self.choices) else self.choices


PARAMETERS: tuple[ParamSpec, ...] = (
    # --- model (configure-time) ---
    ParamSpec(
        "checkpoint",
        "string",
        "",
        "Checkpoint directory (or exported model file for onnxruntime/openvino/tensorrt).",
    ),
    ParamSpec(
        "backend",
        "string",
        "torch",
        "Inference backend (a row of the backend table, flowclas_ros/runtime/registry.py).",
        choices=backend_kinds,
    ),
    ParamSpec(
        "device", "string", "cpu", "Inference device: cpu, cuda or cuda:N (openvino: CPU, GPU or NPU)."
    ),
    ParamSpec(
        "precision",
        "string",
        "auto",
        "Inference precision: auto, f32, bf16, f16 or int8, as the backend runs them (openvino: auto "
        "picks bf16 where the CPU has it natively and the export passed its AP gate, int8 for the "
        "quantised export, else f32; torch: auto = f16 on CUDA, f32 on the CPU). fp32/fp16 are "
        "deprecated spellings.",
        choices=registry.all_precision_spellings,
    ),
    ParamSpec(
        "num_threads",
        "string",
        "auto",
        "CPU inference threads: auto (the CPUs this process may use, os.sched_getaffinity) or N. "
        "Pools never spin while idle (docs/DEPLOY.md).",
        dynamic=True,
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
    ParamSpec(
        "image_topics",
        "string_array",
        ["image_raw"],
        "Input image topics, one per camera; relative names resolve in the node's namespace "
        "(remap them or give absolute names).",
    ),
    ParamSpec(
        "compressed",
        "bool_array",
        [],
        "Per topic: subscribe sensor_msgs/CompressedImage. Empty: true for topics ending in /compressed.",
    ),
    ParamSpec(
        "camera_names",
        "string_array",
        [],
        "Per topic: output namespace ~/<name>/. Empty: derived from the topic (see README).",
    ),
    ParamSpec(
        "qos_reliability", "string", "best_effort", "Input subscription reliability.", choices=RELIABILITY
    ),
    ParamSpec(
        "qos_depth",
        "integer",
        1,
        "Input subscription history depth (sensor-data QoS: 1). The node keeps only the newest frame "
        "per camera either way; several cameras publishing at the same instant lost frames unevenly "
        "in DDS at depth 1, and 2-3 evened that out.",
        low=1,
        high=100,
    ),
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
        [],
        "Per image topic: aligned depth image (16UC1 mm / 32FC1 m); '' = no 3D for that camera. "
        "Empty: no 3D outputs at all.",
    ),
    ParamSpec(
        "camera_info_topics",
        "string_array",
        [],
        "Per image topic: sensor_msgs/CameraInfo of the colour camera; required where depth_topics is set.",
    ),
    # --- more outputs (configure-time) ---
    ParamSpec(
        "extra_stages",
        "string_array",
        [],
        "Per-frame output stages to add, each 'module:Class': a flowclas_ros.ros.frame_stages.FrameStage "
        "subclass, built at configure as Class(node, cameras). A stage that raises on a frame is logged "
        'and counted (stage_errors in /diagnostics), never fatal. See README "Add an output".',
    ),
    # --- runtime ---
    ParamSpec(
        "threshold",
        "double",
        math.nan,
        "Per-pixel anomaly threshold (score >= threshold is anomalous); NaN uses the checkpoint's, "
        "also when set at runtime (after configure the parameter shows the value in use).",
        runtime=True,
    ),
    ParamSpec(
        "image_threshold",
        "double",
        math.nan,
        "Image-level threshold: is_anomalous = image_score >= image_threshold; NaN uses the "
        "checkpoint's image_threshold, else (older checkpoints) the pixel threshold in effect, also "
        "when set at runtime (after configure the parameter shows the value in use).",
        runtime=True,
    ),
    ParamSpec(
        "prompt_set",
        "string",
        "",
        "VL4AD prompt set (a packaged name, e.g. road, or a YAML path) for a checkpoint with a text "
        "scorer, torch backend; empty = the checkpoint's. Read at configure: the checkpoint's "
        "thresholds were calibrated on the fused score of its own set, so another set also needs "
        "threshold and image_threshold set (a change while configured is refused).",
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
        "marker_lifetime_s",
        "double",
        0.0,
        "Lifetime of ~/<camera>/anomaly_markers (s): markers vanish when the node stops updating "
        "them; 0 = two of that camera's measured frame periods.",
        runtime=True,
        low=0.0,
        high=3600.0,
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
    # --- field learning (~/learn_nominal, ~/load_model, ~/rollback_model) ---
    ParamSpec(
        "learn_dir",
        "string",
        "",
        "Field-learning directory (collected frames, runs, checkpoints, swap history); "
        "empty = '<checkpoint>.learn' beside the checkpoint. A run never writes outside it.",
    ),
    ParamSpec(
        "learn_threads",
        "integer",
        1,
        "CPU threads of a learning run's child processes (training, validation, export).",
        runtime=True,
        low=1,
        high=256,
    ),
    ParamSpec(
        "learn_nice",
        "integer",
        0,
        "nice increment of a learning run's child processes and of their scheduling autogroup "
        "(0 = the same weight as the node; its learn_threads are what keep it to its share).",
        runtime=True,
        low=0,
        high=19,
    ),
    ParamSpec(
        "learn_ap_margin",
        "double",
        0.02,
        "Gate: the new model's AP on synthetic anomalies may fall by at most this much.",
        runtime=True,
        low=0.0,
        high=1.0,
    ),
    # --- start-up ---
    ParamSpec("autostart", "bool", True, "Configure and activate at start (plain ros2 run works)."),
)
"""Every parameter ``anomaly_node`` declares (``use_sim_time`` is rclpy's own)."""

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}
NAN_MEANS_CHECKPOINT = ("threshold", "image_threshold")
"""NaN = the checkpoint's value; the node then sets the parameter to the value it uses."""
BUILTIN_PARAMETERS = ("use_sim_time",)
