"""The four output topics of one camera and how a prediction becomes messages on them.

The publishers are lifecycle publishers: they publish nothing while the node is inactive.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rclpy.lifecycle import LifecycleNode
from rclpy.publisher import Publisher
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from flowclas_ros.msg import AnomalyResult
from flowclas_ros.ros.conversions import float_image_msg, mono8_image_msg, result_msg, rgb8_image_msg
from flowclas_ros.ros.frame_stages import FrameCall
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


ImageSink = Callable[[Callable[[], None]], None]
"""Takes a frame's deferred image-output publishing (a no-argument callable) to run elsewhere."""


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
        stages: Sequence[FrameCall] = (),
        *,
        received_ns: int | None = None,
        image_sink: ImageSink | None = None,
    ) -> FrameResult:
        """Post-processes one finite prediction and publishes every wanted output with ``header``.

        ``stages`` (this frame's calls of the worker's :mod:`~flowclas_ros.ros.frame_stages`) run
        in order after the regions are found and before the result goes out; 3D regions one returns
        (the 3D stage's) fill the result's ``AnomalyRegion`` 3D fields. ``latency_ms`` in
        the result is ``received_ns`` (the frame's ``time.monotonic_ns()`` at the callback) ->
        just before the result is published; ``model_ms`` its share of the batch forward.

        Without ``image_sink`` the image outputs go out first and the result last. With one, the
        result goes out first and the image outputs are handed to ``image_sink`` as a callable
        (the worker's image thread publishes them while the next forward runs), so a planner
        waiting for the result does not wait for the overlay.
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
        images = functools.partial(self._publish_images, header, rgb, prediction, settings, mask, regions)
        if image_sink is None:
            images()
        regions_3d: list[Region3D | None] | None = None
        for stage in stages:
            found = stage(header, score, mask, regions)
            if found is not None:
                regions_3d = found
        start_ns = time.monotonic_ns() if received_ns is None else received_ns
        message = result_msg(
            header,
            image_score=prediction.image_score,
            threshold=threshold,
            image_threshold=settings.image_threshold,
            anomalous_fraction=fraction,
            regions=regions,
            latency_ms=(time.monotonic_ns() - start_ns) / 1e6,
            model_ms=prediction.model_ms,
            backend=backend,
        )
        if regions_3d is not None:
            for region_msg, region_3d in zip(message.regions, regions_3d):
                fill_region_3d(region_msg, region_3d)
        self.result.publish(message)
        if image_sink is not None:
            image_sink(images)
        return FrameResult(mask, regions, fraction, threshold)

    def _publish_images(
        self,
        header: Header,
        rgb: np.ndarray,
        prediction: Prediction,
        settings: RuntimeSettings,
        mask: np.ndarray,
        regions: list[Region],
    ) -> None:
        """score_map / mask / overlay, each only while subscribed and enabled."""
        score, threshold = prediction.score_map, settings.threshold
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
