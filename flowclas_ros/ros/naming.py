"""Per-camera output namespaces of ``anomaly_node`` (pure Python, no rclpy).

The rule (contract, documented in README.md):

* ``camera_name(topic)``: split the input topic on ``/``, drop empty parts,
  then drop trailing parts while they are one of :data:`IMAGE_SUFFIXES`
  (``compressed``, ``image_raw``, ``image_rect``, ...); join the rest with
  ``_``; an empty result is ``camera``.
  ``/camera/image_raw`` -> ``camera``; ``/front/color/image_raw/compressed``
  -> ``front_color``; ``/image`` -> ``camera``.
* The outputs of that camera are ``~/<camera_name>/result``, ``~/<camera_name>/score_map``,
  ``~/<camera_name>/mask`` and ``~/<camera_name>/overlay``, i.e.
  ``/<namespace>/anomaly_node/<camera_name>/...``, with one camera as with several.
  Cameras with depth also get ``~/<camera_name>/anomaly_points`` and
  ``~/<camera_name>/anomaly_markers``.
* The ``camera_names`` parameter, when set, replaces the derived names (one per topic).
"""

from __future__ import annotations

import re

IMAGE_SUFFIXES = frozenset(
    {"compressed", "image_raw", "image_rect", "image_rect_color", "image_color", "image_mono", "image"}
)
"""Trailing topic parts that name the image stream rather than the camera."""

DEFAULT_CAMERA = "camera"
OUTPUTS = ("result", "score_map", "mask", "overlay", "anomaly_points", "anomaly_markers")
"""Output topic leaf names, under ``~/<camera_name>/``.

The last two (3D) exist only for cameras with a depth topic (``depth_topics``)."""

# A ROS 2 topic token: letters, digits and underscores, not starting with a digit.
_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def camera_name(topic: str) -> str:
    """The camera name derived from an input topic (see the module docstring for the rule)."""
    parts = [part for part in topic.split("/") if part]
    while parts and parts[-1] in IMAGE_SUFFIXES:
        parts.pop()
    return "_".join(parts) or DEFAULT_CAMERA


def output_topic(camera: str, output: str) -> str:
    """The private output topic of one camera, e.g. ``~/front_color/result``."""
    return f"~/{camera}/{output}"


def resolve_camera_names(topics: list[str], overrides: list[str] | None = None) -> list[str]:
    """One valid, unique camera name per input topic.

    Args:
        topics: Input image topics.
        overrides: The ``camera_names`` parameter; empty or None derives names with :func:`camera_name`.

    Raises:
        ValueError: Wrong number of overrides, a name that is not a valid ROS topic token, or
            two topics that map to the same name (the message says which, and how to fix it).
    """
    if overrides:
        if len(overrides) != len(topics):
            raise ValueError(
                f"camera_names has {len(overrides)} entries but image_topics has {len(topics)}; "
                "give one name per topic or leave camera_names empty"
            )
        names = list(overrides)
    else:
        names = [camera_name(topic) for topic in topics]
    for topic, name in zip(topics, names):
        if not _TOKEN.match(name):
            raise ValueError(
                f"camera name {name!r} (for topic {topic!r}) is not a valid ROS name token "
                "(letters, digits, '_', not starting with a digit); set camera_names"
            )
    seen: dict[str, str] = {}
    for topic, name in zip(topics, names):
        if name in seen:
            raise ValueError(
                f"topics {seen[name]!r} and {topic!r} both map to camera name {name!r}; "
                "set camera_names to tell them apart"
            )
        seen[name] = topic
    return names
