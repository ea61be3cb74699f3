"""Helpers for tests that run ``anomaly_node`` in its own process and talk to it over real rclpy.

Not a test module. Test files import it (pytest puts test/ on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

STARTUP_TIMEOUT_S = 120.0  # 2 shared, loaded CPU cores: cold torch import can take 30 s
NODE_NAME = "anomaly_node"


def node_executable() -> str:
    """Path of the ``flowclas-node`` console script of this interpreter's environment."""
    exe = Path(sys.executable).parent / "flowclas-node"
    if exe.exists():
        return str(exe)
    found = shutil.which("flowclas-node")
    assert found, "flowclas-node is not installed; run 'make bootstrap' (pip install -e .)"
    return found


def require_ros() -> None:
    """Fails with a clear message when rclpy or the built messages are missing."""
    try:
        import rclpy  # noqa: F401

        from flowclas_ros.msg import AnomalyResult  # noqa: F401
    except ImportError as err:
        pytest.fail(f"ROS environment not available ({err}); run tests with 'make test' (scripts/env.sh)")


def write_params(path: Path, params: dict[str, Any]) -> Path:
    """Writes a ``--params-file`` for anomaly_node (matches it in any namespace)."""
    path.write_text(yaml.safe_dump({"/**/anomaly_node": {"ros__parameters": params}}))
    return path


class NodeProcess:
    """``flowclas-node --ros-args --params-file FILE -r __ns:=NS`` in its own process."""

    def __init__(
        self,
        params_file: Path,
        namespace: str,
        log_path: Path,
        *extra_ros_args: str,
        env: dict[str, str] | None = None,
    ):
        self.namespace = namespace
        self.fqn = f"{namespace}/{NODE_NAME}"
        self.log_path = log_path
        env = dict(
            os.environ,
            FLOWCLAS_ALLOW_RANDOM_BACKBONE="1",
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
            **(env or {}),
        )
        env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
        cmd = [
            node_executable(),
            "--ros-args",
            "--params-file",
            str(params_file),
            "-r",
            f"__ns:={namespace}",
            *extra_ros_args,
        ]
        self._log = open(log_path, "w")  # a file, not a pipe: a full pipe would block the node
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, text=True)

    def output(self) -> str:
        """Everything the node printed so far."""
        return self.log_path.read_text()

    def check_alive(self) -> None:
        """Fails the test with the node's output if it has exited."""
        if self.proc.poll() is not None:
            pytest.fail(f"anomaly_node exited with code {self.proc.returncode}:\n{self.output()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> tuple[int, str]:
        """Sends ``sig`` and waits; returns (exit code, output)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"anomaly_node did not exit within {timeout} s of signal {sig}:\n{self.output()}")
        finally:
            self._log.close()
        return self.proc.returncode, self.output()


class Recorder:
    """Thread-safe list of received messages with wait helpers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[tuple[float, Any]] = []  # (receive time.time(), msg)

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.messages.append((time.time(), msg))

    def snapshot(self) -> list[Any]:
        with self._lock:
            return [m for _, m in self.messages]

    def timed(self) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self.messages)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def find(self, predicate: Callable[[Any], bool]) -> Any | None:
        for msg in reversed(self.snapshot()):
            if predicate(msg):
                return msg
        return None


class TestClient:
    """A plain rclpy node (own context, spun in a background thread) that drives anomaly_node."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str, node_process: NodeProcess | None = None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        require_ros()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.node_process = node_process
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self) -> None:
        while self._running and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if self._running:
                    raise

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    # ------------------------------------------------------------ waiting
    def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Polls ``condition`` until truthy (returns it) or fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.node_process is not None:
                self.node_process.check_alive()
            time.sleep(0.01)
        output = self.node_process.output()[-4000:] if self.node_process else ""
        pytest.fail(f"timed out after {timeout} s waiting for {what}\nnode output:\n{output}")

    # ------------------------------------------------------------ topics
    def publisher(self, topic: str, msg_type: Any, reliability: str = "best_effort", depth: int = 1):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)
        return self.node.create_publisher(msg_type, topic, qos)

    def subscribe(self, topic: str, msg_type: Any, depth: int = 50) -> Recorder:
        recorder = Recorder()
        self.node.create_subscription(msg_type, topic, recorder, depth)  # reliable
        return recorder

    def wait_matched(self, publisher: Any, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Waits until ``publisher`` has a subscriber (the node subscribed; it may still be starting)."""
        self.wait_for(
            lambda: publisher.get_subscription_count() > 0, timeout, f"a subscriber on {publisher.topic_name}"
        )

    def wait_subscribed(self, recorder_topic: str, timeout: float = 30.0) -> None:
        """Waits until our subscription on ``recorder_topic`` sees a publisher."""
        self.wait_for(
            lambda: self.node.count_publishers(recorder_topic) > 0,
            timeout,
            f"a publisher on {recorder_topic}",
        )

    def image(self, rgb: np.ndarray, frame_id: str, encoding: str = "rgb8", **kwargs: Any):
        """:func:`image_msg` of ``rgb`` stamped now by this client's clock (``kwargs``: ``step_padding``)."""
        return image_msg(rgb, encoding, frame_id, now_stamp(self), **kwargs)

    # ------------------------------------------------------------ services
    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 60.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            self.wait_for(lambda: client.service_is_ready(), timeout, f"service {name}")
            future = client.call_async(request)
            self.wait_for(future.done, timeout, f"an answer from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_fqn: str, values: dict[str, Any]) -> list[Any]:
        """SetParameters on ``node_fqn``; returns one SetParametersResult per value."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        )
        return list(self.call(SetParameters, f"{node_fqn}/set_parameters", request).results)

    def get_parameters(self, node_fqn: str, names: list[str]) -> dict[str, Any]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.call(GetParameters, f"{node_fqn}/get_parameters", GetParameters.Request(names=names))
        return {n: parameter_value_to_python(v) for n, v in zip(names, response.values)}

    def get_state(self, node_fqn: str) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"{node_fqn}/get_state", GetState.Request()).current_state.label

    def change_state(self, node_fqn: str, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self.call(ChangeState, f"{node_fqn}/change_state", request).success)


@contextlib.contextmanager
def running_node(
    params_file: Path,
    namespace: str,
    log_path: Path,
    client_name: str,
    *extra_ros_args: str,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[NodeProcess, TestClient]]:
    """A node process (``env``: more environment) and a client driving it; afterwards both are
    closed and the stop is checked: exit 0 and no traceback in the output (issue 23)."""
    proc = NodeProcess(params_file, namespace, log_path, *extra_ros_args, env=env)
    client = TestClient(client_name, proc)
    try:
        yield proc, client
    finally:
        client.close()
        rc, out = proc.stop()
        assert rc == 0, f"anomaly_node exit code {rc}:\n{out}"
        assert "Traceback" not in out, out


def now_stamp(client: TestClient):
    return client.node.get_clock().now().to_msg()


def stamp_ns(stamp: Any) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def image_msg(rgb: np.ndarray, encoding: str, frame_id: str, stamp: Any, *, step_padding: int = 0):
    """A sensor_msgs/Image holding ``rgb`` converted to ``encoding`` (via the project's encoder)."""
    import array

    from sensor_msgs.msg import Image

    from flowclas_ros.data.images.codec import encode_image

    step, data = encode_image(rgb, encoding, step_padding=step_padding)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0, step=step)
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.data = array.array("B", data)
    return msg


def raw_image_msg(encoding: str, height: int, width: int, step: int, data: bytes, frame_id: str, stamp: Any):
    """A sensor_msgs/Image with arbitrary (possibly inconsistent) fields, for malformed frames."""
    import array

    from sensor_msgs.msg import Image

    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=step)
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.data = array.array("B", data)
    return msg


def compressed_msg(data: bytes, fmt: str, frame_id: str, stamp: Any):
    import array

    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.data = array.array("B", data)
    return msg


def image_from_msg(msg: Any) -> np.ndarray:
    """rgb8 / mono8 / 32FC1 output Image -> numpy (HxWx3 uint8, HxW uint8, HxW float32)."""
    from flowclas_ros.data.images.codec import decode_float, decode_image, decode_mono8

    if msg.encoding == "32FC1":
        return decode_float(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)
    if msg.encoding == "mono8":
        return decode_mono8(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, copy=True)


def diagnostic_values(array_msg: Any, status_suffix: str) -> tuple[int, str, dict[str, str]] | None:
    """(level, message, values) of the status whose name ends with ``status_suffix``."""
    for status in array_msg.status:
        if status.name.endswith(status_suffix):
            level = status.level if isinstance(status.level, int) else int.from_bytes(status.level, "little")
            return level, status.message, {kv.key: kv.value for kv in status.values}
    return None


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random colour texture (JPEG-friendly, varied scores)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
