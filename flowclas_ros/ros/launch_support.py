"""Pure-Python helpers of ``launch/anomaly.launch.py`` (testable without launch_ros)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from flowclas_ros.ros.naming import camera_name, output_topic

NODE_NAME = "anomaly_node"
RVIZ_INPUT_TOPIC = "/camera/image_raw"
"""Input topic in ``config/anomaly.rviz``, replaced with the first camera's."""
RVIZ_OVERLAY_TOPIC = "/anomaly_node/camera/overlay"
"""Overlay topic in ``config/anomaly.rviz``, replaced with the first camera's."""


def topic_list(text: str) -> list[str]:
    """``"['/a', '/b']"`` (YAML list) or ``"/a,/b"`` -> ``['/a', '/b']``."""
    value = yaml.safe_load(text) if text.strip().startswith("[") else text.split(",")
    return [str(topic).strip() for topic in value if str(topic).strip()]


def file_parameters(params_file: str | Path) -> dict[str, Any]:
    """The anomaly_node parameters of a ROS parameters file; {} if it cannot be read.

    Sections ``/**``, ``anomaly_node``, ``/<ns>/anomaly_node`` and ``/**/anomaly_node`` are
    merged in file order.
    """
    try:
        content = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    merged: dict[str, Any] = {}
    for key, section in content.items():
        if key in ("/**", NODE_NAME) or str(key).endswith(f"/{NODE_NAME}"):
            merged.update((section or {}).get("ros__parameters", {}))
    return merged


def rviz_topics(namespace: str, parameters: dict[str, Any]) -> tuple[str, str]:
    """(input, overlay) topics of the first camera, as the node will name them.

    A compressed input is shown through its raw topic (RViz's Image display subscribes raw).
    """
    topics = parameters.get("image_topics") or [RVIZ_INPUT_TOPIC]
    names = parameters.get("camera_names") or [camera_name(topics[0])]
    node = "/".join(part for part in (namespace.strip("/"), NODE_NAME) if part)
    return topics[0].removesuffix("/compressed"), f"/{node}/{output_topic(names[0], 'overlay')[2:]}"


def rviz_config_text(template: str, namespace: str, parameters: dict[str, Any]) -> str:
    """``config/anomaly.rviz`` with its two image topics pointed at the first camera."""
    shown_input, overlay = rviz_topics(namespace, parameters)
    text = re.sub(rf"Value: {re.escape(RVIZ_OVERLAY_TOPIC)}$", f"Value: {overlay}", template, flags=re.M)
    return re.sub(rf"Value: {re.escape(RVIZ_INPUT_TOPIC)}$", f"Value: {shown_input}", text, flags=re.M)
