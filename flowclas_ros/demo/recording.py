"""Reading back what the demo recorded from the node (``scripts/demo_record.py``), without ROS.

The recording is a rosbag2 holding the node's ``result``, ``score_map``, ``mask`` and
``/diagnostics`` messages (``overlay`` is not subscribed, so the node does not render it).
:func:`read_recording` decodes it with rosbags (the bag stores the message definitions,
``AnomalyResult`` included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from flowclas_ros.data.images.codec import decode_float, decode_mono8

OUTPUTS = {
    "result": "flowclas_ros/msg/AnomalyResult",
    "score_map": "sensor_msgs/msg/Image",
    "mask": "sensor_msgs/msg/Image",
}
DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"


def output_topics(node: str, camera: str) -> dict[str, str]:
    """Output name -> absolute topic of ``node`` (``/ns/name``) for ``camera``."""
    return {name: f"{node.rstrip('/')}/{camera}/{name}" for name in OUTPUTS}


def record_arguments(node: str, camera: str) -> list[str]:
    """``--topic TOPIC=TYPE`` arguments of ``scripts/demo_record.py`` for the node's outputs."""
    args: list[str] = []
    for name, topic in output_topics(node, camera).items():
        args += ["--topic", f"{topic}={OUTPUTS[name]}"]
    return args + ["--topic", f"{DIAGNOSTICS_TOPIC}={DIAGNOSTICS_TYPE}"]


@dataclass
class Recording:
    """The decoded recording; images and maps keyed by header stamp (ns).

    Attributes:
        results: One dict per ``AnomalyResult`` in receive order (stamp, scores, regions, latency).
        score_maps: Stamp -> (H, W) float32 score map.
        masks: Stamp -> (H, W) uint8 mask (0/255).
        diagnostics: The node's statuses per name, in order: ``{name: [{"level", "message", key: value}]}``.
        counts: Messages per output name (``diagnostics`` included).
    """

    results: list[dict[str, Any]] = field(default_factory=list)
    score_maps: dict[int, np.ndarray] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    diagnostics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _stamp(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _result(msg: Any, recv_ns: int) -> dict[str, Any]:
    return {
        "stamp_ns": _stamp(msg),
        "recv_ns": recv_ns,
        "image_score": float(msg.image_score),
        "threshold": float(msg.threshold),
        "is_anomalous": bool(msg.is_anomalous),
        "anomalous_fraction": float(msg.anomalous_fraction),
        "regions": [
            {
                "x": int(r.x_offset),
                "y": int(r.y_offset),
                "width": int(r.width),
                "height": int(r.height),
                "peak_score": float(r.peak_score),
                "mean_score": float(r.mean_score),
                "area": int(r.area),
            }
            for r in msg.regions
        ],
        "latency_ms": float(msg.latency_ms),
        "model_ms": float(msg.model_ms),
        "backend": str(msg.backend),
    }


def read_recording(bag: Path, node: str, camera: str) -> Recording:
    """Decodes the node's outputs (and its /diagnostics statuses) from a recorded bag."""
    topics = output_topics(node, camera)
    by_topic = {topic: name for name, topic in topics.items()}
    rec = Recording(counts=dict.fromkeys([*OUTPUTS, "diagnostics"], 0))
    node_names = {node.strip("/"), node.rstrip("/").rsplit("/", 1)[-1]}  # full or bare name in status names
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if c.topic in by_topic or c.topic == DIAGNOSTICS_TOPIC]
        for conn, recv_ns, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == DIAGNOSTICS_TOPIC:
                rec.counts["diagnostics"] += 1
                for status in msg.status:
                    if status.name.split(": ", 1)[0].strip("/") in node_names:
                        values = {kv.key: kv.value for kv in status.values}
                        rec.diagnostics.setdefault(status.name, []).append(
                            {"level": int(status.level), "message": status.message, **values}
                        )
                continue
            name = by_topic[conn.topic]
            rec.counts[name] += 1
            if name == "result":
                rec.results.append(_result(msg, recv_ns))
                continue
            args = (msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian)
            if name == "score_map":
                rec.score_maps[_stamp(msg)] = decode_float(*args)
            else:
                rec.masks[_stamp(msg)] = decode_mono8(*args[:5])
    return rec
