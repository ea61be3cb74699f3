"""Launch flowclas_ros's anomaly_node (and optionally RViz showing the input and the overlay).

Usage:
    ros2 launch flowclas_ros anomaly.launch.py checkpoint:=/path/to/checkpoint \
        [image_topics:="['/front/image_raw', '/rear/image_raw/compressed']"] [backend:=onnxruntime] \
        [namespace:=/robot] [params_file:=my_params.yaml] [use_sim_time:=true] [rviz:=true]

Launch arguments left empty keep the value from the parameters file (default
``config/anomaly.yaml``). With ``rviz:=true``, RViz opens ``config/anomaly.rviz`` with its
two image displays pointed at the first camera's input and overlay.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from flowclas_ros.ros.launch_support import file_parameters, rviz_config_text, topic_list

PACKAGE = "flowclas_ros"
EXECUTABLE = "anomaly_node"
DEFAULT_PARAMS_FILE = "anomaly.yaml"
DEFAULT_RVIZ_FILE = "anomaly.rviz"

# Launch argument -> node parameter, passed only when the argument is not empty.
PARAMETER_ARGUMENTS = {
    "checkpoint": "checkpoint",
    "image_topics": "image_topics",
    "backend": "backend",
    "use_sim_time": "use_sim_time",
}


def _overrides(context: LaunchContext) -> dict:
    overrides: dict = {}
    for argument, parameter in PARAMETER_ARGUMENTS.items():
        value = LaunchConfiguration(argument).perform(context)
        if parameter == "image_topics" and value:
            overrides[parameter] = topic_list(value)
        elif parameter == "use_sim_time":
            overrides[parameter] = value.lower() == "true"
        elif value:
            overrides[parameter] = value
    return overrides


def _launch_setup(context: LaunchContext) -> list[Node]:
    params_file = LaunchConfiguration("params_file").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    overrides = _overrides(context)
    actions = [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=EXECUTABLE,
            namespace=namespace,
            parameters=[params_file, overrides],
            output="screen",
            emulate_tty=True,
        )
    ]
    if LaunchConfiguration("rviz").perform(context).lower() == "true":
        template = Path(LaunchConfiguration("rviz_config").perform(context)).read_text()
        shown = {**file_parameters(params_file), **overrides}
        with tempfile.NamedTemporaryFile("w", prefix="flowclas_", suffix=".rviz", delete=False) as rviz_file:
            rviz_file.write(rviz_config_text(template, namespace, shown))
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", rviz_file.name],
                parameters=[{"use_sim_time": overrides["use_sim_time"]}],
                output="screen",
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    """Declare the launch arguments, the anomaly_node and (optionally) RViz."""
    share = FindPackageShare(PACKAGE)
    arguments = [
        ("params_file", PathJoinSubstitution([share, "config", DEFAULT_PARAMS_FILE]), "ROS parameters file"),
        ("checkpoint", "", "Checkpoint directory (empty: the parameters file's)"),
        ("image_topics", "", "Input topics: \"['/front/image_raw']\" or /a,/b (empty: the file's)"),
        ("backend", "", "torch | onnxruntime | tensorrt (empty: the parameters file's)"),
        ("namespace", "", "Namespace of the node, e.g. one per robot"),
        ("use_sim_time", "false", "Use /clock (bag replay)"),
        ("rviz", "false", "Start RViz with the input and overlay images"),
        ("rviz_config", PathJoinSubstitution([share, "config", DEFAULT_RVIZ_FILE]), "RViz config template"),
    ]
    declared = [
        DeclareLaunchArgument(name, default_value=value, description=text) for name, value, text in arguments
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_launch_setup)])
