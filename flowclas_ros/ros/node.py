"""Minimal ``anomaly_node``: publishes ``flowclas_ros/msg/AnomalyResult`` on ``~/result``.

This is the foundation's node. It proves the package, the generated messages and the
entry points work end to end; it runs no model yet. Each tick it publishes an
AnomalyResult that reports "nothing anomalous" with the configured threshold, so a
subscriber sees the real message type, header and QoS the full node will use.

Run it with ``flowclas-node --ros-args -p frame_id:=camera`` (pip install) or
``ros2 run flowclas_ros anomaly_node`` (colcon install).
"""

from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from flowclas_ros.msg import AnomalyResult

NODE_NAME = "anomaly_node"
# Name reported in AnomalyResult.backend while no model is loaded.
BACKEND_NONE = "none"


class AnomalyNode(Node):
    """Publishes a heartbeat AnomalyResult at ``rate_hz`` on ``~/result``.

    Parameters:
        frame_id (str): ``header.frame_id`` of the published results.
        rate_hz (float): publish rate in Hz (> 0).
        threshold (float): per-pixel score threshold reported in each result.
    """

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        self._frame_id = str(self.declare_parameter("frame_id", "camera").value)
        rate_hz = float(self.declare_parameter("rate_hz", 2.0).value)
        self._threshold = float(self.declare_parameter("threshold", 0.5).value)
        if not rate_hz > 0.0:
            raise ValueError(f"parameter rate_hz must be > 0, got {rate_hz}")
        # Reliable depth 10 (the default): results are small and must not be dropped.
        self._publisher = self.create_publisher(AnomalyResult, "~/result", 10)
        self._timer = self.create_timer(1.0 / rate_hz, self._publish)
        self.get_logger().info(
            f"publishing on {self._publisher.topic_name} at {rate_hz:g} Hz (no model: backend '{BACKEND_NONE}')"
        )

    def _publish(self) -> None:
        msg = AnomalyResult()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self._frame_id
        msg.image_score = 0.0
        msg.threshold = self._threshold
        msg.is_anomalous = False
        msg.anomalous_fraction = 0.0
        msg.regions = []
        msg.latency_ms = 0.0
        msg.backend = BACKEND_NONE
        self._publisher.publish(msg)


def _parse_cli(argv: list[str]) -> None:
    """Handle ``--help`` and reject unknown non-ROS arguments (ROS ones are left to rclpy)."""
    parser = argparse.ArgumentParser(
        prog="flowclas-node",
        description="Start the flowclas_ros anomaly_node. Parameters are set with "
        "'--ros-args -p NAME:=VALUE' or '--ros-args --params-file config/anomaly.yaml'.",
    )
    parser.parse_args(remove_ros_args(args=argv)[1:])


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM.

    Args:
        args: full argument vector including the program name (default ``sys.argv``),
            may contain ``--ros-args ...``.

    Returns:
        Process exit code: 0 on a clean shutdown, 2 on bad parameters.
    """
    argv = list(sys.argv if args is None else args)
    _parse_cli(argv)
    # rclpy installs SIGINT/SIGTERM handlers that make spin() raise ExternalShutdownException.
    rclpy.init(args=argv)
    node = None
    try:
        node = AnomalyNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, ParameterException) as err:
        print(f"flowclas-node: {err}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
