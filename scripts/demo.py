"""Foundation demo: start anomaly_node in its own process and print one AnomalyResult it publishes.

Run with ``make demo``. Shows that the environment, the generated messages, the installed
``flowclas-node`` entry point and DDS across processes all work.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import rclpy
from rclpy.node import Node

from flowclas_ros.msg import AnomalyResult

NAMESPACE = "/demo"
TOPIC = f"{NAMESPACE}/anomaly_node/result"
TIMEOUT_S = 60.0


def receive_one(node: Node, deadline: float, proc: subprocess.Popen) -> AnomalyResult | None:
    """Spin ``node`` until one AnomalyResult arrives on TOPIC, the deadline passes or ``proc`` dies."""
    received: list[AnomalyResult] = []
    node.create_subscription(AnomalyResult, TOPIC, received.append, 10)
    while not received and time.monotonic() < deadline and proc.poll() is None:
        rclpy.spin_once(node, timeout_sec=0.1)
    return received[0] if received else None


def main() -> int:
    """Run the demo; exit code 0 when a result was received and the node stopped cleanly."""
    exe = shutil.which("flowclas-node")
    if exe is None:
        print("demo: flowclas-node not found; run 'make bootstrap', 'source scripts/env.sh'", file=sys.stderr)
        return 1
    cmd = [exe, "--ros-args", "-r", f"__ns:={NAMESPACE}", "--params-file", "config/anomaly.yaml"]
    print("demo: starting", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd)
    rclpy.init()
    node = rclpy.create_node("flowclas_demo_listener")
    try:
        msg = receive_one(node, time.monotonic() + TIMEOUT_S, proc)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    if msg is None:
        print(f"demo: no AnomalyResult on {TOPIC} within {TIMEOUT_S:.0f} s", file=sys.stderr)
        return 1
    print(f"demo: received on {TOPIC}:\n  {msg}")
    print(f"demo: anomaly_node exited with code {rc}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
