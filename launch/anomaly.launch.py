"""Launch flowclas_ros's anomaly_node as a lifecycle node (and optionally RViz).

Usage:
    ros2 launch flowclas_ros anomaly.launch.py checkpoint:=/path/to/checkpoint \
        [namespace:=/robot1] [image_topics:="['/front/image_raw', '/rear/image_raw/compressed']"] \
        [remappings:="image_raw:=/camera/color/image_raw"] [device:=cuda] [backend:=onnxruntime] \
        [threshold:=0.8] [input_size:=448,448] [camera_names:=front,rear] [autostart:=false] \
        [params_file:=my_params.yaml] [use_sim_time:=true] [rviz:=true] [fixed_frame:=base_link] \
        [dds_profile:=none]

Launch arguments left empty keep the value from the parameters file (default
``config/anomaly.yaml``); ``use_sim_time`` too, so a parameters file can set it. With
``autostart:=false`` the node waits unconfigured for a lifecycle manager (nav2's
lifecycle_manager, ``ros2 lifecycle set``: the standard ``~/change_state`` service).
With ``rviz:=true``, RViz opens ``config/anomaly.rviz`` pointed at the first camera's
input, overlay, anomaly points and markers, in ``fixed_frame``; the generated config is a
temporary file deleted when the launch shuts down. The README lists the arguments.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnShutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from flowclas_ros.ros.launch_support import (
    PARAMETER_ARGUMENTS,
    file_parameters,
    parameter_overrides,
    remapping_list,
    rviz_config_text,
)

PACKAGE = "flowclas_ros"
EXECUTABLE = "anomaly_node"
DEFAULT_PARAMS_FILE = "anomaly.yaml"
DEFAULT_RVIZ_FILE = "anomaly.rviz"


def _value(context: LaunchContext, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def _launch_setup(context: LaunchContext) -> list:
    params_file = _value(context, "params_file")
    namespace = _value(context, "namespace")
    overrides = parameter_overrides({name: _value(context, name) for name in PARAMETER_ARGUMENTS})
    remappings = remapping_list(_value(context, "remappings"))
    dds_profile = _value(context, "dds_profile")  # read by the node before rclpy.init
    actions: list = [
        LifecycleNode(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=EXECUTABLE,
            namespace=namespace,
            parameters=[params_file, overrides] if overrides else [params_file],
            remappings=remappings,
            output="screen",
            emulate_tty=True,
            additional_env={"FLOWCLAS_DDS_PROFILE": dds_profile} if dds_profile else None,
        )
    ]
    if _value(context, "rviz").lower() == "true":
        template = Path(_value(context, "rviz_config")).read_text()
        shown = {**file_parameters(params_file), **overrides}
        text = rviz_config_text(template, namespace, shown, _value(context, "fixed_frame"), remappings)
        handle, rviz_file = tempfile.mkstemp(prefix="flowclas_", suffix=".rviz")
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        sim_time = [{"use_sim_time": overrides["use_sim_time"]}] if "use_sim_time" in overrides else []
        actions += [
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", rviz_file],
                parameters=sim_time,
                output="screen",
            ),
            RegisterEventHandler(OnShutdown(on_shutdown=lambda *_: Path(rviz_file).unlink(missing_ok=True))),
        ]
    return actions


def generate_launch_description() -> LaunchDescription:
    """Declare the launch arguments, the anomaly_node and (optionally) RViz."""
    share = FindPackageShare(PACKAGE)
    arguments = [
        ("params_file", PathJoinSubstitution([share, "config", DEFAULT_PARAMS_FILE]), "ROS parameters file"),
        ("namespace", "", "Namespace of the node (and of its relative input topics), e.g. /robot1"),
        ("checkpoint", "", "Checkpoint directory or exported model (empty: the parameters file's)"),
        ("backend", "", "torch | onnxruntime | tensorrt (empty: the parameters file's)"),
        ("device", "", "cpu | cuda | cuda:N (empty: the parameters file's)"),
        ("image_topics", "", "Input topics: \"['front/image_raw']\" or a,b (empty: the file's)"),
        ("camera_names", "", "Output namespaces per input topic: front,rear (empty: derived)"),
        ("input_size", "", "Model input HEIGHT,WIDTH, e.g. 448,448 (empty: the file's)"),
        ("threshold", "", "Per-pixel threshold (empty: the file's; .nan there = the checkpoint's)"),
        ("autostart", "", "true: configure + activate at start; false: wait for a lifecycle manager"),
        ("remappings", "", "Topic remappings for the node: FROM:=TO[,FROM:=TO...]"),
        ("use_sim_time", "", "true for bag replay with /clock (empty: the parameters file's)"),
        ("rviz", "false", "Start RViz with the input, overlay, anomaly points and markers"),
        ("rviz_config", PathJoinSubstitution([share, "config", DEFAULT_RVIZ_FILE]), "RViz config template"),
        ("fixed_frame", "camera_color_optical_frame", "RViz fixed frame (the camera's optical frame)"),
        (
            "dds_profile",
            "",
            "Fast DDS profile for the node: empty = flowclas_ros's, none = Fast DDS's defaults, or a file",
        ),
    ]
    declared = [
        DeclareLaunchArgument(name, default_value=value, description=text) for name, value, text in arguments
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_launch_setup)])
