"""Shared pytest setup.

ROS isolation: every test session claims its own ROS_DOMAIN_ID (1..100, guarded by a lock
file so parallel sessions on one machine never share one) and keeps DDS discovery on
localhost. It is set in os.environ before any test runs, so both rclpy in the test process
and every subprocess a test starts (which inherits the environment) use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_checkpoints import TinyCache

from flowclas_ros.dds_isolation import isolate_ros_traffic

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyCache:
    """Tiny checkpoints and exports built once per session (:mod:`tiny_checkpoints`); read-only."""
    return TinyCache(tmp_path_factory.mktemp("tiny"))


def pytest_configure(config: pytest.Config) -> None:
    """Isolate ROS traffic of this session (see module docstring)."""
    isolate_ros_traffic()


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


@pytest.fixture
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stands in for an AVX2-only CPU (OpenVINO capabilities ``BIN, EXPORT_IMPORT, FP32, INT8``).

    Sets :data:`flowclas_ros.runtime.cpu.CPU_CAPS_ENV` in this process and the processes a
    test starts, so the "no bf16 here" path is tested on CPUs that have bf16 too.
    """
    from flowclas_ros.runtime.cpu import CPU_CAPS_ENV

    monkeypatch.setenv(CPU_CAPS_ENV, "BIN,EXPORT_IMPORT,FP32,INT8")
    yield
