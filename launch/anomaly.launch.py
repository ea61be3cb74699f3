"""Launch flowclas_ros's anomaly_node with its default parameters (config/anomaly.yaml).

Usage:
    ros2 launch flowclas_ros anomaly.launch.py [namespace:=/front_camera] [params_file:=my.yaml]
"""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "flowclas_ros"
DEFAULT_PARAMS_FILE = "anomaly.yaml"


def generate_launch_description() -> LaunchDescription:
    """Declare the launch arguments and the anomaly_node."""
    default_params = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", DEFAULT_PARAMS_FILE])
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=default_params,
                description="ROS parameters file for anomaly_node",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="Namespace of the node, e.g. one per camera",
            ),
            Node(
                package=PACKAGE,
                executable="anomaly_node",
                name="anomaly_node",
                namespace=LaunchConfiguration("namespace"),
                parameters=[LaunchConfiguration("params_file")],
                output="screen",
                emulate_tty=True,
            ),
        ]
    )
