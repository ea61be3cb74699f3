"""Keeps one session's ROS traffic to itself: its own ROS_DOMAIN_ID, DDS discovery on localhost.

Used by the test session (``test/conftest.py``) and by ``make demo``: their nodes must never
talk to another session's nodes on this machine, or to a robot's camera on domain 0. No ROS
import: it only sets the environment that rclpy and every child process read.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from pathlib import Path
from typing import IO

# Held open until the process exits: the flock on it reserves the domain id.
_domain_lock: IO[str] | None = None
_domain_id: int | None = None


def _claim_domain_id() -> int:
    """A domain id in 1..100 whose lock file no other live process on this machine holds."""
    global _domain_lock
    candidates = list(range(1, 101))
    random.shuffle(candidates)
    for domain_id in candidates:
        lock = open(Path(tempfile.gettempdir()) / f"flowclas_ros_test_domain_{domain_id}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _domain_lock = lock
        return domain_id
    raise RuntimeError("all ROS domain ids 1..100 are held by other flowclas_ros sessions")


def isolate_ros_traffic() -> int:
    """Sets ``ROS_DOMAIN_ID`` (claimed once per process) and localhost-only discovery in os.environ.

    Returns:
        The claimed domain id.

    Raises:
        RuntimeError: Every domain id 1..100 is held by another session.
    """
    global _domain_id
    if _domain_id is None:
        _domain_id = _claim_domain_id()
    os.environ["ROS_DOMAIN_ID"] = str(_domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; conflicts with the above
    return _domain_id
