"""Hand-made rosbag2 recordings for the bag and bag-training tests (rosbags, no ROS needed).

Not a test module: the one builder of bag messages (``header``, ``image_msg``, ``mono_msg``,
``compressed_msg``, ``string_msg``) and of bags (``write_bag``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE, typestore
from flowclas_ros.data.images.codec import encode_compressed, encode_image, encode_mono8

START_NS = 1_700_000_000 * 10**9


def header(stamp_ns: int, frame_id: str = "cam"):
    types = typestore().types
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id,
    )


def image_msg(
    stamp_ns: int, rgb: np.ndarray, encoding: str = "rgb8", step: int | None = None, data: bytes | None = None
):
    """A sensor_msgs/Image of ``rgb`` in ``encoding``; with ``step`` and ``data``: those (malformed)."""
    if data is None:
        step, data = encode_image(rgb, encoding)
    return typestore().types[IMAGE_TYPE](
        header=header(stamp_ns),
        height=rgb.shape[0],
        width=rgb.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=np.frombuffer(data, np.uint8),
    )


def mono_msg(stamp_ns: int, mask: np.ndarray):
    """A mono8 sensor_msgs/Image of ``mask`` (a label image)."""
    step, data = encode_mono8(mask)
    return typestore().types[IMAGE_TYPE](
        header=header(stamp_ns),
        height=mask.shape[0],
        width=mask.shape[1],
        encoding="mono8",
        is_bigendian=0,
        step=step,
        data=np.frombuffer(data, np.uint8),
    )


def compressed_msg(stamp_ns: int, rgb: np.ndarray | None, fmt: str = "jpeg", data: bytes | None = None):
    if data is None:
        data = encode_compressed(rgb, fmt, 95)
    return typestore().types[COMPRESSED_TYPE](
        header=header(stamp_ns), format=fmt, data=np.frombuffer(data, np.uint8)
    )


def string_msg(text: str):
    return typestore().types["std_msgs/msg/String"](data=text)


def write_bag(path: Path, entries, storage: str = "sqlite3", empty_topics=()) -> Path:
    """entries: (topic, log_time_ns, message) in write order; empty_topics: (topic, msgtype) never written."""
    ts = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        conns = {}
        for topic, msgtype in empty_topics:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
        for topic, log_time, msg in entries:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=ts)
            writer.write(conns[topic], log_time, ts.serialize_cdr(msg, msg.__msgtype__))
    return path


def moving_frames(n: int, shape=(48, 64), seed: int = 0) -> list[np.ndarray]:
    """``n`` frames of a textured scene panning sideways (each clearly different from the last)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    world = rng.integers(0, 256, (h // 4, (w + 8 * n) // 4, 3), dtype=np.uint8)
    world = np.kron(world, np.ones((4, 4, 1), np.uint8))  # 4-pixel blocks: survives the thumbnail
    return [np.ascontiguousarray(world[:, 8 * i : 8 * i + w]) for i in range(n)]


def still_frames(base: np.ndarray, n: int, seed: int = 1) -> list[np.ndarray]:
    """``n`` copies of ``base`` with +-2 levels of sensor noise (a robot standing still)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        noise = rng.integers(-2, 3, base.shape)
        out.append(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return out


FRONT_TOPIC, REAR_TOPIC = "/front/image_raw", "/rear/image/compressed"


def two_topic_bag(path: Path, storage: str = "sqlite3") -> list[np.ndarray]:
    """4 s at 10 Hz on two image topics; the front camera (rgb8) stands still from 1.0 s to 2.9 s."""
    moving = moving_frames(40)
    front = moving[:10] + still_frames(moving[10], 20) + moving[30:]
    entries = []
    for i in range(40):
        stamp = START_NS + i * 100_000_000
        entries.append((FRONT_TOPIC, stamp, image_msg(stamp, front[i])))
        entries.append((REAR_TOPIC, stamp, compressed_msg(stamp, moving[39 - i])))
    write_bag(path, entries, storage)
    return front
