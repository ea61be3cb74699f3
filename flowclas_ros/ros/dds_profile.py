"""The node's Fast DDS profile: large image outputs without multi-second stalls.

Fast DDS reads its XML profile once, when the process creates its first participant, so
the choice is made from the environment before ``rclpy.init`` (ROS parameters are read
later). The profile itself, and the measurement behind it, are in
``fastdds_large_images.xml`` beside this module.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

PROFILE_ENV = "FLOWCLAS_DDS_PROFILE"
"""``none`` (or ``off``) skips the profile; a path uses that file instead of ours."""

FASTDDS_ENVS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
"""Fast DDS 2.x (Humble, Jazzy) reads the first, 3.x (Kilted and later) the second."""

PACKAGED_PROFILE = Path(__file__).with_name("fastdds_large_images.xml")


def apply_dds_profile(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Points Fast DDS at the node's profile unless the user chose otherwise.

    Args:
        environ: The environment to read and update (the process's own by default).

    Returns:
        One line for the node's log, or None when nothing applies (another RMW).

    Raises:
        ValueError: ``FLOWCLAS_DDS_PROFILE`` names a file that does not exist.
    """
    choice = environ.get(PROFILE_ENV, "").strip()
    if choice.lower() in ("none", "off"):
        return f"Fast DDS profile: none ({PROFILE_ENV}={choice})"
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return None
    for name in FASTDDS_ENVS:
        if environ.get(name):
            return f"Fast DDS profile: {environ[name]} (from {name}; {PROFILE_ENV} not applied)"
    path = Path(choice).expanduser() if choice else PACKAGED_PROFILE
    if not path.is_file():
        raise ValueError(f"{PROFILE_ENV}={choice}: no such file (unset it, or set it to 'none')")
    for name in FASTDDS_ENVS:
        environ[name] = str(path)
    what = "" if choice else " (16 MiB shared-memory segment, 100 ms heartbeat)"
    return f"Fast DDS profile: {path}{what}; set {PROFILE_ENV}=none to use Fast DDS's defaults"
