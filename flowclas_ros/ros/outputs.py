"""The four output topics of one camera and how a prediction becomes messages on them.

The publishers are lifecycle publishers: they publish nothing while the node is inactive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from rclpy.lifecycle import LifecycleNode
from rclpy.publisher import Publisher
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from flowclas_ros.msg import AnomalyResult
from flowclas_ros.ros.conversions import float_image_msg, mono8_image_msg, result_msg, rgb8_image_msg
from flowclas_ros.ros.naming import output_topic
from flowclas_ros.ros.qos import IMAGE_OUTPUT_QOS, RESULT_QOS
from flowclas_ros.ros.region_3d import fill_region_3d
from flowclas_ros.ros.settings import RuntimeSettings
from flowclas_ros.runtime.base import Prediction
from flowclas_ros.runtime.geometry3d import Region3D
from flowclas_ros.runtime.postprocess import Region, anomaly_mask, find_regions, render_overlay


@dataclass(frozen=True)
class FrameResult:
    """What one frame's post-processing produced (returned by :meth:`CameraOutputs.publish`)."""

    mask: np.ndarray
    regions: list[Region]
    anomalous_fraction: float
    threshold: float


Stage3D = Callable[[Header, np.ndarray, np.ndarray, list[Region]], list[Region3D | None] | None]
"""(header, score_map, mask, regions) -> one Region3D (or None) per region, or None without 3D.

Runs before the result message is built, so its regions carry their 3D fields
(``DepthStage.process`` for one camera, which also publishes the cloud and markers)."""


class FrameStage(Protocol):
    """The worker's one per-frame extension point: a stage run inside each camera's publish.

    Implemented by :class:`flowclas_ros.ros.depth_stage.DepthStage`; runs on the worker thread.
    """

    def for_frame(self, camera: int, settings: RuntimeSettings) -> Stage3D | None:
        """The stage for this frame of camera ``camera``, or None when it has nothing to do."""

    def skip(self, camera: int, header: Header) -> None:
        """Camera ``camera``'s frame ``header`` produced no scores (e.g. NaN): clear stale output."""


@dataclass
class CameraOutputs:
    """Publishers ``~/<camera>/{result,score_map,mask,overlay}`` of one camera.

    Image outputs are computed only while someone subscribes to them (and their
    ``publish_*`` parameter is true), so an unwatched overlay costs nothing.
    """

    result: Publisher
    score_map: Publisher
    mask: Publisher
    overlay: Publisher

    @classmethod
    def create(cls, node: LifecycleNode, camera: str) -> CameraOutputs:
        """Creates the (lifecycle) publishers of ``camera`` on ``node``."""
        create = node.create_lifecycle_publisher
        return cls(
            result=create(AnomalyResult, output_topic(camera, "result"), RESULT_QOS),
            score_map=create(Image, output_topic(camera, "score_map"), IMAGE_OUTPUT_QOS),
            mask=create(Image, output_topic(camera, "mask"), IMAGE_OUTPUT_QOS),
            overlay=create(Image, output_topic(camera, "overlay"), IMAGE_OUTPUT_QOS),
        )

    def destroy(self, node: LifecycleNode) -> None:
        """Destroys the publishers."""
        for publisher in (self.result, self.score_map, self.mask, self.overlay):
            node.destroy_lifecycle_publisher(publisher)

    def publish(
        self,
        header: Header,
        rgb: np.ndarray,
        prediction: Prediction,
        settings: RuntimeSettings,
        backend: str,
        stage_3d: Stage3D | None = None,
    ) -> FrameResult:
        """Post-processes one finite prediction and publishes every wanted output with ``header``.

        ``stage_3d`` (cameras with depth) runs after the regions are found and before the result
        goes out; its 3D regions fill the result's ``AnomalyRegion`` 3D fields.
        """
        score = prediction.score_map
        threshold = settings.threshold
        mask = anomaly_mask(score, threshold)
        fraction = float(np.count_nonzero(mask)) / mask.size
        # Regions need a labelling pass: skip it when nothing is anomalous.
        regions = (
            find_regions(
                score, threshold, settings.min_region_area, max_regions=settings.max_regions, mask=mask
            )
            if fraction > 0.0
            else []
        )
        if settings.publish_score_map and self.score_map.get_subscription_count():
            self.score_map.publish(float_image_msg(header, score))
        if settings.publish_mask and self.mask.get_subscription_count():
            self.mask.publish(mono8_image_msg(header, mask))
        if settings.publish_overlay and self.overlay.get_subscription_count():
            overlay = render_overlay(
                rgb,
                score,
                threshold,
                regions,
                alpha=settings.overlay_alpha,
                score_range=settings.overlay_score_range,
                image_score=prediction.image_score,
            )
            self.overlay.publish(rgb8_image_msg(header, overlay))
        regions_3d = stage_3d(header, score, mask, regions) if stage_3d is not None else None
        message = result_msg(
            header,
            image_score=prediction.image_score,
            threshold=threshold,
            image_threshold=settings.image_threshold,
            anomalous_fraction=fraction,
            regions=regions,
            latency_ms=prediction.model_ms,
            backend=backend,
        )
        if regions_3d is not None:
            for region_msg, region_3d in zip(message.regions, regions_3d):
                fill_region_3d(region_msg, region_3d)
        # The result goes last: a planner reacting to it finds the images (and 3D) already sent.
        self.result.publish(message)
        return FrameResult(mask, regions, fraction, threshold)
