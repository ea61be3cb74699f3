"""Frame stages for test_where_to_add_output.py, loaded by a real node through ``extra_stages``.

Not a test module. The node process imports it by name (``output_stages:HeaderEchoStage``), as it
would a user's module: test/ is put on that process's PYTHONPATH.
"""

from __future__ import annotations

from typing import Any

from std_msgs.msg import Header

from flowclas_ros.ros.frame_stages import FrameCall, FrameStage
from flowclas_ros.ros.naming import output_topic
from flowclas_ros.ros.settings import CameraInput, RuntimeSettings

ECHO_OUTPUT = "frame_seen"
"""``~/<camera>/frame_seen``: one std_msgs/Header per scored frame, the input image's."""


class HeaderEchoStage(FrameStage):
    """A new output: publishes each scored frame's header on ``~/<camera>/frame_seen``."""

    def __init__(self, node: Any, cameras: list[CameraInput]):
        self.publishers = [
            node.create_lifecycle_publisher(Header, output_topic(camera.name, ECHO_OUTPUT), 10)
            for camera in cameras
        ]

    def for_frame(self, camera: int, settings: RuntimeSettings) -> FrameCall | None:
        def publish(header, score_map, mask, regions):
            assert score_map.shape == mask.shape  # the stage sees the frame's full-size maps
            self.publishers[camera].publish(header)

        return publish

    def destroy(self, node: Any) -> None:
        for publisher in self.publishers:
            node.destroy_lifecycle_publisher(publisher)
        self.publishers = []


class FailingStage(FrameStage):
    """Raises on every frame: the node must log and count it, and keep serving."""

    def __init__(self, node: Any, cameras: list[CameraInput]):
        pass

    def for_frame(self, camera: int, settings: RuntimeSettings) -> FrameCall | None:
        def fail(header, score_map, mask, regions):
            raise RuntimeError(f"deliberate failure on {header.frame_id}")

        return fail
