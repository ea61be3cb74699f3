"""anomaly_node as a separate process, started through the installed `flowclas-node` entry point.

The test process publishes a camera image with real rclpy and receives the node's AnomalyResult.
The model is a tiny untrained checkpoint (random-init ViT-S/14, 2 flow steps): this checks the
plumbing (entry point, messages, DDS across processes, header passing, shutdown), not accuracy.
Helpers here are reused by test_foundation_colcon.py.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_checkpoints import tiny_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / "config" / "anomaly.yaml"
NODE_KEY = "/**/anomaly_node"
IMAGE_TOPIC = "/foundation_cam/image_raw"
IMAGE_HEIGHT, IMAGE_WIDTH = 48, 64
CHECKPOINT_THRESHOLD = 0.5
# Generous: cold torch/timm imports and model construction on 2 shared CPU cores.
RESULT_TIMEOUT_S = 180.0

pytestmark = pytest.mark.ros


def result_topic(namespace: str) -> str:
    """Absolute result topic of anomaly_node in `namespace` for IMAGE_TOPIC (README naming rule)."""
    from flowclas_ros.ros.naming import camera_name

    return f"{namespace}/anomaly_node/{camera_name(IMAGE_TOPIC)}/result"


def node_args(namespace: str, checkpoint: Path, params_file: Path = PARAMS_FILE) -> list[str]:
    return [
        "--ros-args",
        "-r",
        f"__ns:={namespace}",
        "--params-file",
        str(params_file),
        "-p",
        f"checkpoint:={checkpoint}",
        "-p",
        f"image_topics:=[{IMAGE_TOPIC}]",
    ]


def rgb_image(stamp_ns: int, frame_id: str):
    from sensor_msgs.msg import Image

    pixels = np.random.default_rng(stamp_ns % 2**32).integers(
        0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), np.uint8
    )
    msg = Image(height=IMAGE_HEIGHT, width=IMAGE_WIDTH, encoding="rgb8", is_bigendian=0, step=IMAGE_WIDTH * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = frame_id
    msg.data = pixels.tobytes()
    return msg


class NodeClient:
    """Test-side ROS node: publishes camera images, collects AnomalyResults, reads parameters."""

    def __init__(self, context, namespace: str, proc: subprocess.Popen[str]) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from flowclas_ros.msg import AnomalyResult

        self.proc, self.namespace = proc, namespace
        self.node = rclpy.create_node("foundation_client", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.publisher = self.node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.results: list[AnomalyResult] = []
        self.node.create_subscription(AnomalyResult, result_topic(namespace), self.results.append, 10)

    def spin_until(self, done, timeout_s: float, on_tick=None) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                pytest.fail(f"anomaly_node exited early with code {self.proc.returncode}:\n{out}")
            if on_tick:
                on_tick()
            self.executor.spin_once(timeout_sec=0.05)

    def exchange(self, frame_id: str, timeout_s: float = RESULT_TIMEOUT_S):
        """Publish images (one every 0.5 s) until a result for one of them arrives; return (image, result)."""
        sent: dict[tuple[int, int], object] = {}
        last = [0.0]

        def publish() -> None:
            if time.monotonic() - last[0] >= 0.5:
                last[0] = time.monotonic()
                image = rgb_image(time.time_ns(), frame_id)
                sent[(image.header.stamp.sec, image.header.stamp.nanosec)] = image
                self.publisher.publish(image)

        def matched():
            for result in self.results:
                key = (result.header.stamp.sec, result.header.stamp.nanosec)
                if key in sent:
                    return sent[key], result
            return None

        self.spin_until(lambda: matched() is not None, timeout_s, on_tick=publish)
        found = matched()
        assert found, f"no AnomalyResult on {result_topic(self.namespace)} within {timeout_s} s"
        return found

    def get_parameters(self, names: list[str]) -> dict[str, object]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        client = self.node.create_client(GetParameters, f"{self.namespace}/anomaly_node/get_parameters")
        self.spin_until(client.service_is_ready, 30)
        future = client.call_async(GetParameters.Request(names=names))
        self.spin_until(future.done, 30)
        assert future.done(), "anomaly_node's get_parameters did not answer"
        return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values, strict=True)}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def check_result(image, result) -> None:
    """Fields of an AnomalyResult for `image` against the message's documented meaning."""
    from flowclas_ros.msg import AnomalyResult

    assert isinstance(result, AnomalyResult)
    assert result.header == image.header, "the input's header (stamp and frame_id) is copied"
    assert result.threshold == pytest.approx(CHECKPOINT_THRESHOLD), "threshold .nan = the checkpoint's"
    assert result.backend == "torch"
    assert math.isfinite(result.image_score)
    assert isinstance(result.is_anomalous, bool)
    assert 0.0 <= result.anomalous_fraction <= 1.0
    assert math.isfinite(result.latency_ms) and result.latency_ms > 0.0
    if result.anomalous_fraction == 0.0:
        assert list(result.regions) == []
    for region in result.regions:
        assert region.width >= 1 and region.height >= 1
        assert (
            region.x_offset + region.width <= image.width and region.y_offset + region.height <= image.height
        )
        assert 1 <= region.area <= region.width * region.height
        assert region.peak_score >= region.mean_score
    areas = [region.area for region in result.regions]
    assert areas == sorted(areas, reverse=True), "regions are listed largest first"


def start_node(args: list[str], **popen) -> subprocess.Popen[str]:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def stop_node(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    """Send `sig`, wait for the exit and return (exit code, output)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"anomaly_node did not exit within 60 s of {signal.Signals(sig).name}:\n{out}")
    return proc.returncode, out


def node_executable() -> str:
    """The `flowclas-node` console script of this interpreter's environment (pip install -e .)."""
    exe = Path(sys.executable).parent / "flowclas-node"
    assert exe.exists(), f"{exe} is not installed; run 'make bootstrap'"
    return str(exe)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(
        tmp_path_factory.mktemp("foundation") / "checkpoint", threshold=CHECKPOINT_THRESHOLD
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_node_process_answers_an_image_with_anomaly_result(
    ros_context, checkpoint: Path, stop_signal: int
) -> None:
    namespace = f"/foundation_{signal.Signals(stop_signal).name.lower()}"
    proc = start_node([node_executable(), *node_args(namespace, checkpoint)])
    client = NodeClient(ros_context, namespace, proc)
    try:
        image, result = client.exchange(frame_id=f"foundation_cam_{stop_signal}")
        check_result(image, result)
        # Every parameter config/anomaly.yaml sets is one the node declares.
        params = yaml.safe_load(PARAMS_FILE.read_text())[NODE_KEY]["ros__parameters"]
        values = client.get_parameters(sorted(params))
        undeclared = [name for name in params if values[name] is None]
        assert not undeclared, (
            f"config/anomaly.yaml sets parameters anomaly_node does not declare: {undeclared}"
        )
        assert values["checkpoint"] == str(checkpoint), "the -p override wins over the params file"
    finally:
        client.close()
        rc, out = stop_node(proc, stop_signal)
    assert rc == 0, f"anomaly_node exit code {rc} after {signal.Signals(stop_signal).name}:\n{out}"
    assert "Traceback" not in out, out


def test_node_rejects_bad_parameter_with_one_line_reason() -> None:
    proc = subprocess.run(
        [node_executable(), "--ros-args", "-p", "backend:=no_such_backend"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "backend" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_node_help() -> None:
    proc = subprocess.run([node_executable(), "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--ros-args" in proc.stdout
