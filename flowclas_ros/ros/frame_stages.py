"""Per-frame stages of ``anomaly_node``: the worker's extension point for outputs that need more.

A stage runs on the inference thread inside each camera's publish, after the frame's mask and
regions are found and before its ``AnomalyResult`` goes out. The node holds a list of them: the
built-in 3D stage (:class:`flowclas_ros.ros.depth_stage.DepthStage`, cameras with depth) and the
ones named by the ``extra_stages`` parameter, so an output is added without editing the package:

    extra_stages: ["my_package.stages:HeartbeatStage"]

Each entry is ``module:Class``, a :class:`FrameStage` subclass importable by the node's Python,
constructed at configure as ``Class(node, cameras)`` (create lifecycle publishers there: they
are silent while the node is inactive). A stage that raises on a frame costs that frame its
stage, never the node: the worker logs it (throttled) and counts it per camera
(``stage_errors`` on /diagnostics); the frame's other outputs go out as usual.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
from std_msgs.msg import Header

from flowclas_ros.ros.param_validation import check_stage_specs
from flowclas_ros.ros.settings import CameraInput, RuntimeSettings
from flowclas_ros.runtime.geometry3d import Region3D
from flowclas_ros.runtime.postprocess import Region

FrameCall = Callable[[Header, np.ndarray, np.ndarray, list[Region]], list[Region3D | None] | None]
"""(header, score_map, mask, regions) -> one Region3D (or None) per region, or None.

A stage returns regions only when it computes their 3D fields (the 3D stage does); the last
stage that returns some fills the result's ``AnomalyRegion`` 3D fields."""


class FrameStage:
    """Base of the per-frame stages; only :meth:`for_frame` must be overridden.

    The node calls the lifecycle hooks on its executor thread, the frame hooks on the inference
    thread (never both at once for one stage: the worker is stopped before ``unsubscribe``).
    """

    def for_frame(self, camera: int, settings: RuntimeSettings) -> FrameCall | None:
        """The call for this frame of camera ``camera`` (index), or None when it has nothing to do."""
        raise NotImplementedError

    def skip(self, camera: int, header: Header) -> None:
        """Camera ``camera``'s frame ``header`` produced no scores (NaN): clear what is stale."""

    def subscribe(self, node: Any) -> None:
        """Activate: subscribe to what the stage needs besides the frame."""

    def unsubscribe(self, node: Any, *, publish: bool = True) -> None:
        """Deactivate (after the worker stopped); ``publish``: the context still allows publishing."""

    def destroy(self, node: Any) -> None:
        """Cleanup: destroy the stage's publishers."""


def load_stage(spec: str, node: Any, cameras: list[CameraInput]) -> FrameStage:
    """Imports ``module:Class`` and constructs it as ``Class(node, cameras)`` (configure).

    Raises:
        ValueError: One line naming the entry: bad format, import failure, not a
            :class:`FrameStage` subclass, or its constructor failed.
    """
    reason = check_stage_specs([spec])
    if reason:
        raise ValueError(reason)
    module_name, class_name = spec.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"extra_stages: cannot load {spec!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, FrameStage)):
        raise ValueError(f"extra_stages: {spec!r} is not a subclass of {__name__}.FrameStage")
    try:
        return cls(node, cameras)
    except Exception as err:  # noqa: BLE001 - a user's constructor: any failure is one line
        raise ValueError(f"extra_stages: {spec!r} failed to start: {type(err).__name__}: {err}") from err


def load_stages(specs: list[str], node: Any, cameras: list[CameraInput]) -> list[FrameStage]:
    """:func:`load_stage` for each entry; when one fails, those built before it are destroyed."""
    stages: list[FrameStage] = []
    try:
        for spec in specs:
            stages.append(load_stage(spec, node, cameras))
    except ValueError:
        call_hooks(stages, "destroy", node.get_logger(), node)
        raise
    return stages


def call_hooks(stages: list[FrameStage], hook: str, logger: Any, *args: Any, **kwargs: Any) -> None:
    """Calls lifecycle ``hook`` of every stage; one that raises is logged and the rest still run."""
    for stage in stages:
        try:
            getattr(stage, hook)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a stage must never break a transition
            logger.error(f"frame stage {type(stage).__name__}.{hook} failed: {type(err).__name__}: {err}")


def guarded(call: FrameCall, on_error: Callable[[BaseException], None]) -> FrameCall:
    """``call`` that reports an exception to ``on_error`` and returns None instead of raising."""

    def run(header: Header, score_map: np.ndarray, mask: np.ndarray, regions: list[Region]):
        try:
            return call(header, score_map, mask, regions)
        except Exception as err:  # noqa: BLE001 - one stage's failure must not cost the frame
            on_error(err)
            return None

    return run
