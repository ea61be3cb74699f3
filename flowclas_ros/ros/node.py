"""``flowclas-node`` / ``ros2 run flowclas_ros anomaly_node``: runs :class:`AnomalyNode` until SIGINT/SIGTERM.

With ``autostart`` (default true) the node configures and activates itself at start, so a
plain ``ros2 run`` just works; if that fails the process logs the reason and exits with
code 1 (a launch file shows it died). With ``autostart: false`` it waits, unconfigured, for
a lifecycle manager (the standard ``~/change_state`` / ``~/get_state`` services).
"""

from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.utilities import remove_ros_args

from flowclas_ros.ros.anomaly_node import NODE_NAME, AnomalyNode
from flowclas_ros.ros.dds_profile import apply_dds_profile
from flowclas_ros.ros.oneline import one_line
from flowclas_ros.runtime.threads import passive_openmp

__all__ = ["NODE_NAME", "AnomalyNode", "main"]


def _parse_cli(argv: list[str]) -> None:
    """Handles ``--help`` and rejects unknown non-ROS arguments (ROS ones are left to rclpy)."""
    parser = argparse.ArgumentParser(
        prog="flowclas-node",
        description="Start flowclas_ros's anomaly_node (a lifecycle node). Parameters are set with "
        "'--ros-args -p NAME:=VALUE' or '--ros-args --params-file config/anomaly.yaml'; "
        "see config/anomaly.yaml for the list.",
    )
    parser.parse_args(remove_ros_args(args=argv)[1:])


def prepare_process() -> None:
    """Process-wide settings that must precede torch: OpenMP threads sleep when idle.

    libgomp (torch's intra-op pool) reads ``OMP_WAIT_POLICY`` once, when torch is imported
    (at configure, for the torch backend), and by default its threads spin after each
    parallel region, which starves a process sharing the cores
    (:mod:`flowclas_ros.runtime.threads`). A policy the user exported is kept.
    """
    passive_openmp()


def main(args: list[str] | None = None) -> int:
    """Runs the node until SIGINT/SIGTERM.

    Args:
        args: Full argument vector including the program name (default ``sys.argv``);
            may contain ``--ros-args ...``.

    Returns:
        Exit code: 0 on a clean shutdown, 1 when autostart could not configure or activate
        (e.g. bad checkpoint), 2 on bad parameters or ``FLOWCLAS_DDS_PROFILE`` (only while the
        node is constructed: an error raised later, in a callback, propagates as itself).
    """
    argv = list(sys.argv if args is None else args)
    _parse_cli(argv)
    prepare_process()
    try:
        dds_note = apply_dds_profile()  # before rclpy.init: Fast DDS reads it with the first participant
    except ValueError as err:
        print(f"flowclas-node: {err}", file=sys.stderr)
        return 2
    rclpy.init(args=argv)  # installs SIGINT/SIGTERM handlers: spin() raises ExternalShutdownException
    node = None
    try:
        try:
            node = AnomalyNode()
        except (ValueError, ParameterException) as err:
            print(f"flowclas-node: {one_line(err)}", file=sys.stderr)
            return 2
        if dds_note:
            node.get_logger().info(dds_note)
        if node.autostart:
            # Failures are logged (one line) by the transition callbacks themselves.
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
