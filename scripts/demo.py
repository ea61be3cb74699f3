"""Foundation demo: anomaly_node in its own process answers a camera image with an AnomalyResult.

Run with ``make demo``. It writes a tiny UNTRAINED checkpoint (random-init backbone: no
pretrained weights ship here), starts ``flowclas-node`` with ``config/anomaly.yaml``, publishes
one of scikit-image's sample photos as ``sensor_msgs/Image`` and prints the result. This shows
the environment, the generated messages, the entry point and DDS across processes working;
the scores themselves mean nothing until a trained checkpoint is used.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from flowclas_ros.msg import AnomalyResult

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "/demo"
IMAGE_TOPIC = "/demo_camera/image_raw"
RESULT_TOPIC = f"{NAMESPACE}/anomaly_node/demo_camera/result"
TIMEOUT_S = 180.0


def write_untrained_checkpoint(path: Path) -> Path:
    """A small random-init FlowCLAS checkpoint (ViT-S/14 without pretrained weights, 2 flow steps)."""
    import torch

    from flowclas_ros.model import (
        BackboneConfig,
        FlowCLAS,
        FlowConfig,
        ModelConfig,
        PreprocessConfig,
        save_checkpoint,
    )

    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone=BackboneConfig(weights="none"),
        flow=FlowConfig(steps=2, proj_dim=16),
        preprocess=PreprocessConfig(input_size=(112, 112)),
    )
    return save_checkpoint(FlowCLAS(cfg).eval(), path, threshold=0.5, provenance={"demo": "untrained"})


def sample_image() -> Image:
    """scikit-image's 'coffee' photo (400x600 RGB) as a sensor_msgs/Image."""
    from skimage import data

    pixels = np.ascontiguousarray(data.coffee())
    height, width = pixels.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.header.frame_id = "demo_camera"
    msg.data = pixels.tobytes()
    return msg


def exchange(node: Node, proc: subprocess.Popen) -> AnomalyResult | None:
    """Publish the image every 0.5 s until the node answers (or TIMEOUT_S passes / the node dies)."""
    publisher = node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
    received: list[AnomalyResult] = []
    node.create_subscription(AnomalyResult, RESULT_TOPIC, received.append, 10)
    image, last, deadline = sample_image(), 0.0, time.monotonic() + TIMEOUT_S
    while not received and time.monotonic() < deadline and proc.poll() is None:
        if time.monotonic() - last > 0.5:
            image.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(image)
            last = time.monotonic()
        rclpy.spin_once(node, timeout_sec=0.05)
    return received[0] if received else None


def main() -> int:
    """Run the demo; exit code 0 when a result arrived and the node stopped cleanly."""
    exe = shutil.which("flowclas-node")
    if exe is None:
        print("demo: flowclas-node not found; run 'make bootstrap' first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="flowclas_demo_") as tmp:
        checkpoint = write_untrained_checkpoint(Path(tmp) / "checkpoint")
        cmd = [
            exe,
            "--ros-args",
            "-r",
            f"__ns:={NAMESPACE}",
            "--params-file",
            str(REPO_ROOT / "config/anomaly.yaml"),
        ]
        cmd += ["-p", f"checkpoint:={checkpoint}", "-p", f"image_topics:=[{IMAGE_TOPIC}]"]
        print("demo: starting", " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd)
        rclpy.init()
        node = rclpy.create_node("flowclas_demo_camera")
        try:
            msg = exchange(node, proc)
        finally:
            node.destroy_node()
            rclpy.shutdown()
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=60)
    if msg is None:
        print(f"demo: no AnomalyResult on {RESULT_TOPIC} within {TIMEOUT_S:.0f} s", file=sys.stderr)
        return 1
    print(f"demo: AnomalyResult on {RESULT_TOPIC} (untrained model: scores are not meaningful):")
    print(f"  frame_id={msg.header.frame_id} image_score={msg.image_score:.3f} threshold={msg.threshold:.3f}")
    print(f"  is_anomalous={msg.is_anomalous} anomalous_fraction={msg.anomalous_fraction:.3f}")
    print(f"  regions={len(msg.regions)} latency_ms={msg.latency_ms:.1f} backend={msg.backend}")
    print(f"demo: anomaly_node exited with code {rc}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
