"""Pure-Python helpers of ``launch/anomaly.launch.py`` (testable without launch_ros).

The launch file only wires launch actions; what its arguments mean is decided here:
which node parameters they override (:func:`parameter_overrides`), how ``remappings``
parses (:func:`remapping_list`), and the RViz config for the first camera
(:func:`rviz_config_text`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flowclas_ros.ros.naming import camera_name, output_topic

NODE_NAME = "anomaly_node"
DEFAULT_INPUT = "image_raw"
"""The node's default ``image_topics`` entry (relative: resolves in its namespace)."""

PARAMETER_ARGUMENTS = {
    "checkpoint": "checkpoint",
    "backend": "backend",
    "device": "device",
    "image_topics": "image_topics",
    "camera_names": "camera_names",
    "input_size": "input_size",
    "threshold": "threshold",
    "autostart": "autostart",
    "use_sim_time": "use_sim_time",
}
"""Launch argument -> node parameter; an empty argument leaves the parameters file's value."""

RVIZ_DISPLAYS = {
    "Camera input": "input",
    "Anomaly overlay": "overlay",
    "Anomaly points": "anomaly_points",
    "Anomaly markers": "anomaly_markers",
}
"""Display name in ``config/anomaly.rviz`` -> which topic of the first camera it shows."""


def topic_list(text: str) -> list[str]:
    """``"['/a', '/b']"`` (YAML list) or ``"/a,/b"`` -> ``['/a', '/b']``."""
    value = yaml.safe_load(text) if text.strip().startswith("[") else text.split(",")
    return [str(topic).strip() for topic in value if str(topic).strip()]


def _bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"launch argument {name}: expected true or false, got {text!r}")
    return lowered == "true"


def _input_size(text: str) -> list[int]:
    parts = text.strip().strip("[]").replace("x", ",").split(",")
    try:
        size = [int(part) for part in parts if part.strip()]
    except ValueError:
        size = []
    if len(size) != 2:
        raise ValueError(f"launch argument input_size: expected HEIGHT,WIDTH (or [H, W]), got {text!r}")
    return size


def parameter_overrides(arguments: dict[str, str]) -> dict[str, Any]:
    """Node parameters set by the launch arguments that were given (non-empty), typed.

    Args:
        arguments: Launch argument name -> its (string) value.

    Raises:
        ValueError: A value that does not parse (names the argument).
    """
    overrides: dict[str, Any] = {}
    for argument, parameter in PARAMETER_ARGUMENTS.items():
        text = arguments.get(argument, "").strip()
        if not text:
            continue
        if parameter in ("image_topics", "camera_names"):
            overrides[parameter] = topic_list(text)
        elif parameter in ("autostart", "use_sim_time"):
            overrides[parameter] = _bool(argument, text)
        elif parameter == "input_size":
            overrides[parameter] = _input_size(text)
        elif parameter == "threshold":
            try:
                overrides[parameter] = float(text)
            except ValueError:
                raise ValueError(f"launch argument threshold: expected a number, got {text!r}") from None
        else:
            overrides[parameter] = text
    return overrides


def remapping_list(text: str) -> list[tuple[str, str]]:
    """``"image_raw:=/cam/image_raw, /diagnostics:=/robot/diagnostics"`` -> pairs for the node.

    Raises:
        ValueError: An entry without ``:=``.
    """
    pairs = []
    for entry in text.replace(";", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        source, sep, target = entry.partition(":=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"launch argument remappings: expected FROM:=TO, got {entry!r}")
        pairs.append((source.strip(), target.strip()))
    return pairs


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


def _resolve(topic: str, namespace: str, remappings: list[tuple[str, str]]) -> str:
    """Absolute name of the node's ``topic`` (relative names live in its namespace), remapped."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    resolved = topic if topic.startswith("/") else f"{ns}/{topic}"
    for source, target in remappings:
        if source in (topic, resolved):
            return target if target.startswith("/") else f"{ns}/{target}"
    return resolved


def rviz_topics(
    namespace: str, parameters: dict[str, Any], remappings: list[tuple[str, str]] | None = None
) -> dict[str, str]:
    """The first camera's topics as the node will name them: input, overlay, points, markers.

    A compressed input is shown through its raw topic (RViz's Image display subscribes raw).
    """
    topics = parameters.get("image_topics") or [DEFAULT_INPUT]
    names = parameters.get("camera_names") or [camera_name(topics[0])]
    node = "/".join(part for part in (namespace.strip("/"), NODE_NAME) if part)
    shown = {"input": _resolve(topics[0], namespace, remappings or []).removesuffix("/compressed")}
    for output in ("overlay", "anomaly_points", "anomaly_markers"):
        shown[output] = f"/{node}/{output_topic(names[0], output)[2:]}"
    return shown


def rviz_config_text(
    template: str,
    namespace: str,
    parameters: dict[str, Any],
    fixed_frame: str,
    remappings: list[tuple[str, str]] | None = None,
) -> str:
    """``config/anomaly.rviz`` with its displays pointed at the first camera and ``fixed_frame``.

    Raises:
        ValueError: The template lacks one of :data:`RVIZ_DISPLAYS` (names the display).
    """
    config = yaml.safe_load(template)
    manager = config["Visualization Manager"]
    topics = rviz_topics(namespace, parameters, remappings)
    displays = {display.get("Name"): display for display in manager["Displays"]}
    for name, which in RVIZ_DISPLAYS.items():
        if name not in displays:
            raise ValueError(f"RViz config: no display named {name!r}")
        displays[name]["Topic"]["Value"] = topics[which]
    manager["Global Options"]["Fixed Frame"] = fixed_frame
    return yaml.safe_dump(config, sort_keys=False)
