"""One-way DDS latency of a camera frame between two processes, per Fast DDS profile and reliability.

Usage (inside the dev environment, `source scripts/env.sh`):
    python benchmarks/dds_transport.py [--width 640] [--height 480] [--frames 60] [--rate 10]

A child process publishes rgb8 frames stamped with the wall clock; another subscribes and
prints the publish -> callback latency. Each row is one (publisher profile, subscriber
profile, subscription reliability) combination: Fast DDS's defaults, or flowclas_ros's
node profile (``flowclas_ros/ros/fastdds_large_images.xml``). The writer's shared-memory
segment decides whether a frame travels in one piece: on the development CPU a 921 KB
frame took ~13 ms one way through the default 512 KB segment (reliable) and ~3 ms with
the larger one. The load average is printed: on a shared machine the numbers move with it.
"""

from __future__ import annotations

import argparse
import array
import os
import subprocess
import sys
import time

import numpy as np

TOPIC = "/dds_transport_bench/image"
COMBINATIONS = [  # (publisher profile, subscriber profile, subscription reliability)
    ("default", "default", "reliable"),
    ("default", "default", "best_effort"),
    ("default", "flowclas", "reliable"),
    ("flowclas", "flowclas", "reliable"),
    ("flowclas", "flowclas", "best_effort"),
]


def _qos(reliability: str):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if reliability == "best_effort":
        return qos_profile_sensor_data
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)


def publish(args: argparse.Namespace) -> None:
    """Child: publishes ``frames`` stamped frames at ``rate`` Hz once a subscriber is there."""
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_transport_pub")
    pub = node.create_publisher(Image, TOPIC, _qos("reliable"))  # drivers publish reliable (REP-2003)
    rgb = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # discovery of the reader's locators settles
    for _ in range(args.frames + 20):
        msg = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
        msg.data = array.array("B", rgb.tobytes())
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 10**9)
        pub.publish(msg)
        time.sleep(1.0 / args.rate)
    node.destroy_node()
    rclpy.shutdown()


def subscribe(args: argparse.Namespace) -> None:
    """Child: prints p50 / p90 / max one-way latency (ms) of ``frames`` frames after 10 warm-up ones."""
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_transport_sub")
    latencies: list[float] = []

    def on_image(msg) -> None:
        latencies.append((time.time_ns() - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)

    node.create_subscription(Image, TOPIC, on_image, _qos(args.reliability))
    deadline = time.monotonic() + 60 + args.frames / args.rate
    while len(latencies) < args.frames + 10 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    got = np.asarray(latencies[10:])
    if got.size == 0:
        print("nan nan nan 0")
    else:
        print(f"{np.median(got):.2f} {np.percentile(got, 90):.2f} {got.max():.2f} {got.size}")
    node.destroy_node()
    rclpy.shutdown()


def _env(profile: str) -> dict[str, str]:
    from flowclas_ros.ros.dds_profile import FASTDDS_ENVS, PACKAGED_PROFILE

    env = dict(os.environ)
    for name in FASTDDS_ENVS:
        env.pop(name, None)
        if profile == "flowclas":
            env[name] = str(PACKAGED_PROFILE)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    parser.add_argument("--reliability", default="reliable", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "pub":
        return publish(args)
    if args.role == "sub":
        return subscribe(args)
    size_kb = args.width * args.height * 3 / 1000
    print(f"{args.width}x{args.height} rgb8 ({size_kb:.0f} KB), {args.frames} frames at {args.rate:g} Hz; "
          f"load average {os.getloadavg()[0]:.1f} (1 min) at start")  # fmt: skip
    print("| publisher | subscriber | subscription | one-way p50 ms | p90 | max | received |")
    print("|---|---|---|---|---|---|---|")
    common = [sys.executable, __file__, "--width", str(args.width), "--height", str(args.height),
              "--frames", str(args.frames), "--rate", str(args.rate)]  # fmt: skip
    for pub_profile, sub_profile, reliability in COMBINATIONS:
        sub = subprocess.Popen(
            [*common, "--role", "sub", "--reliability", reliability],
            env=_env(sub_profile),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        subprocess.run([*common, "--role", "pub"], env=_env(pub_profile), check=True, timeout=120)
        out, _ = sub.communicate(timeout=60)
        p50, p90, worst, count = out.split()
        print(
            f"| {pub_profile} | {sub_profile} | {reliability} | {p50} | {p90} | {worst} | {count} |",
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) at end")


if __name__ == "__main__":
    main()
