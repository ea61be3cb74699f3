"""Shared pytest setup.

ROS isolation: every test session claims its own ROS_DOMAIN_ID (1..100, guarded by a lock
file so parallel sessions on one machine never share one) and keeps DDS discovery on
localhost. It is set in os.environ before any test runs, so both rclpy in the test process
and every subprocess a test starts (which inherits the environment) use it.
"""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Held open for the whole session: the flock on it reserves the domain id.
_domain_lock: IO[str] | None = None


def _claim_ros_domain_id() -> int:
    """Return a ROS domain id in 1..100 that no other live test session on this machine holds."""
    global _domain_lock
    candidates = list(range(1, 101))
    random.shuffle(candidates)
    for domain_id in candidates:
        lock = open(Path(tempfile.gettempdir()) / f"flowclas_ros_test_domain_{domain_id}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _domain_lock = lock
        return domain_id
    raise RuntimeError("all ROS domain ids 1..100 are held by other flowclas_ros test sessions")


def pytest_configure(config: pytest.Config) -> None:
    """Isolate ROS traffic of this session (see module docstring)."""
    os.environ["ROS_DOMAIN_ID"] = str(_claim_ros_domain_id())
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; conflicts with the above


@pytest.fixture
def ros_context() -> Iterator[object]:
    """An initialised rclpy Context for one test (shut down afterwards).

    Fails with a clear message when the ROS environment (scripts/env.sh) is missing,
    instead of letting each ROS test fail on an obscure import or library error.
    """
    try:
        import rclpy

        from flowclas_ros.msg import AnomalyResult  # noqa: F401
    except ImportError as err:
        pytest.fail(
            f"ROS environment not available ({err}); run tests with 'make test' or after "
            "'source scripts/env.sh' (messages are built by scripts/bootstrap)"
        )
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()
