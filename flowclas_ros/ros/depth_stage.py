"""The optional 3D stage of ``anomaly_node``: depth + CameraInfo -> anomaly points, markers, region boxes.

Per camera with a depth topic (``depth_topics``):

* callbacks only push the raw depth / CameraInfo messages into small
  :class:`~flowclas_ros.runtime.stamp_sync.StampBuffer` rings (O(1));
* the inference worker, after the colour frame's regions are found and before
  its ``AnomalyResult`` goes out, calls :meth:`DepthStage.process`: the depth
  image nearest the colour stamp within ``depth_sync_tolerance`` (never
  waiting: no match = no 3D for this frame, the 2D outputs go out as usual) and
  the nearest CameraInfo (else the latest, intrinsics rarely change) give the
  cloud ``~/<camera>/anomaly_points`` and the boxes ``~/<camera>/anomaly_markers``;
* every 3D output carries the colour image's header (stamp and optical frame);
* a frame that gets no 3D (no depth within the tolerance, no CameraInfo, unusable depth,
  NaN scores) deletes that camera's markers, so RViz never shows boxes of an old frame;
  markers also carry a finite lifetime (``marker_lifetime_s``, default two frame periods)
  in case the node stops publishing altogether.

Cameras without depth get no 3D publishers at all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from flowclas_ros.data.images.codec import decode_float
from flowclas_ros.ros.frame_stages import FrameCall, FrameStage
from flowclas_ros.ros.markers import MarkerTracker
from flowclas_ros.ros.naming import output_topic
from flowclas_ros.ros.oneline import one_line
from flowclas_ros.ros.pointcloud import anomaly_cloud_msg
from flowclas_ros.ros.qos import IMAGE_OUTPUT_QOS, RESULT_QOS
from flowclas_ros.ros.settings import CameraInput, DepthInput, RuntimeSettings
from flowclas_ros.runtime.depth_camera import PinholeIntrinsics, depth_to_metres
from flowclas_ros.runtime.geometry3d import POINT_DTYPE, Anomalies3D, Region3D, anomalies_3d
from flowclas_ros.runtime.postprocess import Region
from flowclas_ros.runtime.stamp_sync import StampBuffer, stamp_to_ns

THROTTLE_S = 5.0
DEPTH_BUFFER = 30  # >= depth rate x (model latency + one frame period); 1 s at 30 Hz
INFO_BUFFER = 5  # nearest, else latest: CameraInfo only needs to be roughly current
# Sensor data: best effort (also receives from reliable publishers), a little history.
DEPTH_INPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT
)
POINTS_QOS = IMAGE_OUTPUT_QOS  # reliable, newest only (like the image outputs)
MARKERS_QOS = RESULT_QOS  # reliable, depth 10: a lost DELETE would leave a stale box in RViz
FRAME_PERIOD_S = (0.02, 5.0)  # clamp of the measured frame period (automatic marker lifetime)
FIRST_PERIOD_S = 0.5  # assumed before two frames of a camera were seen


@dataclass
class CameraDepth:
    """One camera's depth inputs (buffers, subscriptions) and 3D publishers."""

    camera: str
    inputs: DepthInput
    points: Publisher
    markers: Publisher
    depth: StampBuffer[Image] = field(default_factory=lambda: StampBuffer(DEPTH_BUFFER))
    info: StampBuffer[CameraInfo] = field(default_factory=lambda: StampBuffer(INFO_BUFFER))
    subscriptions: list = field(default_factory=list)
    last_header: Header | None = None  # of the last frame with markers (for clearing them)
    period_s: float | None = None  # smoothed stamp interval of the processed frames
    last_stamp_ns: int | None = None


class DepthStage(FrameStage):
    """The 3D stage of all cameras; ``None`` entries are cameras without depth."""

    def __init__(self, node: LifecycleNode, cameras: list[CameraInput], inputs: list[DepthInput | None]):
        """Creates the 3D publishers (configure time).

        Args:
            node: The anomaly node (its lifecycle publishers are silent while inactive).
            cameras: The node's cameras.
            inputs: One per camera (:func:`flowclas_ros.ros.settings.depth_inputs`).
        """
        self._logger = node.get_logger()
        self.tracker = MarkerTracker()
        self.cameras: list[CameraDepth | None] = [
            None
            if depth is None
            else CameraDepth(
                camera=camera.name,
                inputs=depth,
                points=node.create_lifecycle_publisher(
                    PointCloud2, output_topic(camera.name, "anomaly_points"), POINTS_QOS
                ),
                markers=node.create_lifecycle_publisher(
                    MarkerArray, output_topic(camera.name, "anomaly_markers"), MARKERS_QOS
                ),
            )
            for camera, depth in zip(cameras, inputs)
        ]

    def has_depth(self, index: int) -> bool:
        """Whether camera ``index`` has depth inputs."""
        return self.cameras[index] is not None

    # ------------------------------------------------------------ FrameStage (worker thread)
    def for_frame(self, camera: int, settings: RuntimeSettings) -> FrameCall | None:
        """The 3D stage of one frame of ``camera`` (:meth:`process` bound), None without depth."""
        return functools.partial(self.process, camera, settings) if self.has_depth(camera) else None

    def skip(self, camera: int, header: Header) -> None:
        """A frame of ``camera`` without scores: deletes the markers shown for it."""
        cam = self.cameras[camera]
        if cam is not None:
            self._clear_markers(cam, header)

    def _clear_markers(self, cam: CameraDepth, header: Header) -> None:
        cleared = self.tracker.clear(cam.camera, header)
        if cleared.markers:
            cam.markers.publish(cleared)
        cam.last_header = None

    def _lifetime_s(self, cam: CameraDepth, header: Header, settings: RuntimeSettings) -> float:
        """``marker_lifetime_s``, or two smoothed frame periods of this camera when it is 0."""
        if cam.last_stamp_ns is not None:
            step = (stamp_to_ns(header.stamp.sec, header.stamp.nanosec) - cam.last_stamp_ns) / 1e9
            if step > 0:
                step = min(max(step, FRAME_PERIOD_S[0]), FRAME_PERIOD_S[1])
                cam.period_s = step if cam.period_s is None else 0.8 * cam.period_s + 0.2 * step
        cam.last_stamp_ns = stamp_to_ns(header.stamp.sec, header.stamp.nanosec)
        if settings.marker_lifetime_s > 0:
            return settings.marker_lifetime_s
        return 2.0 * (cam.period_s if cam.period_s is not None else FIRST_PERIOD_S)

    # ------------------------------------------------------------ lifecycle
    def subscribe(self, node: Node) -> None:
        """Subscribes to each camera's depth and CameraInfo (activate)."""
        for cam in self.cameras:
            if cam is None:
                continue
            cam.subscriptions = [
                node.create_subscription(Image, cam.inputs.depth_topic, _pusher(cam.depth), DEPTH_INPUT_QOS),
                node.create_subscription(
                    CameraInfo, cam.inputs.info_topic, _pusher(cam.info), DEPTH_INPUT_QOS
                ),
            ]

    def unsubscribe(self, node: LifecycleNode, *, publish: bool = True) -> None:
        """Unsubscribes, drops the buffered messages and deletes shown markers (deactivate).

        Call after the worker has stopped (the tracker is not thread-safe).
        """
        for cam in self.cameras:
            if cam is None:
                continue
            for subscription in cam.subscriptions:
                node.destroy_subscription(subscription)
            cam.subscriptions = []
            cam.depth.clear()
            cam.info.clear()
            if cam.last_header is not None:
                cleared = self.tracker.clear(cam.camera, cam.last_header)
                if publish and cleared.markers:
                    cam.markers.publish(cleared)
                cam.last_header = None

    def destroy(self, node: LifecycleNode) -> None:
        """Destroys the publishers (cleanup)."""
        for cam in self.cameras:
            if cam is not None:
                node.destroy_lifecycle_publisher(cam.points)
                node.destroy_lifecycle_publisher(cam.markers)
        self.cameras = []

    # ------------------------------------------------------------ per frame (worker thread)
    def process(
        self,
        index: int,
        settings: RuntimeSettings,
        header: Header,
        score_map: np.ndarray,
        mask: np.ndarray,
        regions: list[Region],
    ) -> list[Region3D | None] | None:
        """Publishes the frame's cloud and markers; returns its 3D regions, or None without 3D.

        None when the camera has no depth, no depth image lies within the tolerance, no
        CameraInfo arrived yet, or the depth cannot be used (logged, throttled): then no cloud
        goes out and the markers shown for the camera are deleted.
        """
        cam = self.cameras[index]
        if cam is None:
            return None
        stamp = stamp_to_ns(header.stamp.sec, header.stamp.nanosec)
        depth_msg = cam.depth.nearest(stamp, settings.depth_sync_tolerance_ns)
        info = cam.info.nearest(stamp, settings.depth_sync_tolerance_ns)
        if info is None:
            latest = cam.info.latest()
            info = latest[1] if latest is not None else None
        lifetime_s = self._lifetime_s(cam, header, settings)
        if depth_msg is None or info is None:
            self._clear_markers(cam, header)
            return None
        try:
            result = self._anomalies_3d(depth_msg, info, settings, score_map, mask, regions)
        except ValueError as err:  # includes ImageDecodeError: malformed depth, bad intrinsics, size
            self._logger.warning(
                f"no 3D for camera {cam.camera}: {one_line(err)}", throttle_duration_sec=THROTTLE_S
            )
            self._clear_markers(cam, header)
            return None
        if settings.publish_points and cam.points.get_subscription_count():
            # An empty cloud is published too: it tells planners nothing is anomalous now.
            cam.points.publish(anomaly_cloud_msg(header, result.points))
        # With publish_markers off, the tracker deletes what it had shown.
        shown = result.regions if settings.publish_markers else []
        markers = self.tracker.update(cam.camera, header, shown, lifetime_s=lifetime_s)
        cam.last_header = header
        if markers.markers:
            cam.markers.publish(markers)
        return result.regions

    @staticmethod
    def _anomalies_3d(
        depth_msg: Image,
        info: CameraInfo,
        settings: RuntimeSettings,
        score_map: np.ndarray,
        mask: np.ndarray,
        regions: list[Region],
    ) -> Anomalies3D:
        if not regions and not mask.any():  # nothing anomalous: skip decoding the depth
            return Anomalies3D(points=np.empty(0, POINT_DTYPE), regions=[], valid_pixels=0)
        raw = decode_float(
            depth_msg.encoding,
            depth_msg.height,
            depth_msg.width,
            depth_msg.step,
            depth_msg.data,
            depth_msg.is_bigendian,
            allow_nan=True,
        )
        depth_m = depth_to_metres(raw, depth_msg.encoding, settings.depth.depth_scale)
        intrinsics = PinholeIntrinsics.from_camera_info(info.k, info.p, info.width, info.height)
        return anomalies_3d(score_map, mask, regions, depth_m, intrinsics, settings.depth)


def _pusher(buffer: StampBuffer):
    def push(msg: Image | CameraInfo) -> None:
        # O(1): decoding happens in the worker, only for frames that need it.
        buffer.push(stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec), msg)

    return push
