"""Record ROS 2 topics into a rosbag2: a minimal ``ros2 bag record`` (rosbag2 has no wheels here).

Used by ``make demo`` to record what ``anomaly_node`` publishes during the live replay
(results, score maps, masks, /diagnostics)::

    python scripts/demo_record.py --out BAG --ready FILE \
        --topic /ns/anomaly_node/camera/result=flowclas_ros/msg/AnomalyResult \
        --topic /ns/anomaly_node/camera/overlay=sensor_msgs/msg/Image ...

Messages are written as received (their CDR bytes, stamped with the receive time);
subscriptions are reliable, like RViz's default. ``--ready FILE`` is created once every
topic has a matched publisher. SIGINT or SIGTERM stops the recording and closes the bag; the
message counts per topic are printed as one JSON line. Types that the rosbags typestore
does not know are registered from this repository's ``msg/*.msg``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

MSG_DIR = Path(__file__).resolve().parents[1] / "msg"
PACKAGE = "flowclas_ros"
QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


def parse_topic(item: str) -> tuple[str, str]:
    """``/topic=pkg/msg/Type`` -> ``("/topic", "pkg/msg/Type")``."""
    topic, sep, msgtype = item.partition("=")
    if not sep or not topic.startswith("/") or msgtype.count("/") != 2:
        raise ValueError(f"--topic {item!r}: expected /absolute/topic=package/msg/Type")
    return topic, msgtype


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Type``."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"message type {msgtype} is not importable ({err})") from err


def typestore_for(msgtypes: set[str]):
    """The ROS 2 Jazzy typestore plus this package's messages from ``msg/``."""
    store = get_typestore(Stores.ROS2_JAZZY)
    missing = {t for t in msgtypes if t not in store.fielddefs}
    if missing:
        types = {}
        for path in sorted(MSG_DIR.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
        store.register(types)
    unknown = {t for t in msgtypes if t not in store.fielddefs}
    if unknown:
        raise ValueError(f"no message definition for {', '.join(sorted(unknown))}")
    return store


def record(out: Path, topics: list[tuple[str, str]], ready: Path | None, storage: str) -> dict[str, int]:
    """Records until SIGINT/SIGTERM; returns the message count per topic."""
    store = typestore_for({t for _, t in topics})
    classes = {t: message_class(t) for _, t in topics}
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("flowclas_demo_recorder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    counts = dict.fromkeys((topic for topic, _ in topics), 0)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    try:
        with Writer(out, version=9, storage_plugin=plugin) as writer:
            for topic, msgtype in topics:
                conn = writer.add_connection(topic, msgtype, typestore=store)

                def on_message(data: bytes, topic: str = topic, conn=conn) -> None:
                    writer.write(conn, time.time_ns(), bytes(data))
                    counts[topic] += 1

                node.create_subscription(classes[msgtype], topic, on_message, QOS, raw=True)
            if ready is not None:
                # Only once every topic has a matched publisher: DDS discovery can take seconds
                # under load, and whatever is published before it completes is not recorded.
                subscriptions = list(node.subscriptions)
                while not stop and not all(sub.get_publisher_count() > 0 for sub in subscriptions):
                    executor.spin_once(timeout_sec=0.1)
                ready.write_text("ready\n")
            while not stop:
                executor.spin_once(timeout_sec=0.1)
            deadline = time.monotonic() + 0.5  # take what already arrived
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        context.try_shutdown()
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line; exit status 0 on a clean stop, 2 on bad arguments, 1 on failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="bag directory to create (must not exist)")
    parser.add_argument(
        "--topic", action="append", required=True, metavar="TOPIC=TYPE", help="topic and type (repeatable)"
    )
    parser.add_argument("--ready", type=Path, help="file created once every topic has a matched publisher")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    args = parser.parse_args(argv)
    try:
        topics = [parse_topic(item) for item in args.topic]
        if args.out.exists():
            raise ValueError(f"{args.out} already exists")
        counts = record(args.out, topics, args.ready, args.storage)
    except ValueError as err:
        print(f"demo_record: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"bag": str(args.out), "messages": counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
