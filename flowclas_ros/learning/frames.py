"""Collected frames of a learning run as rosbag2 (no ROS): training frames and held-out frames.

Frames are written as their recorded CDR bytes (exactly what the camera sent), one topic per
bag (:data:`~flowclas_ros.learning.layout.LEARN_TOPIC`, ``.../compressed`` for compressed
images), with the same typestore as the project's bag writer (``flowclas_ros.data.bags.writer``),
so ``flowclas-train`` and ``flowclas-eval`` read them like any recording. Every
``heldout_every``-th frame goes to the held-out bag, the rest to the training bag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer

from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE, BagError, BagSource, typestore
from flowclas_ros.learning.layout import LEARN_TOPIC

HELDOUT_EVERY = 5
"""One frame in five is held out for validation (20 %)."""
DEFAULT_FRAMES = 200
"""Frames collected when a goal sets neither ``duration_s`` nor ``max_frames``."""


def learn_topic(msgtype: str) -> str:
    """The topic collected frames of ``msgtype`` are written on."""
    return LEARN_TOPIC + "/compressed" if msgtype == COMPRESSED_TYPE else LEARN_TOPIC


class FrameRecorder:
    """Two bags (``frames/``, ``heldout/``) written as frames arrive.

    Args:
        frames: Training bag directory (must not exist).
        heldout: Held-out bag directory (must not exist).
        msgtype: ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``.
        heldout_every: Every n-th frame is held out.
    """

    def __init__(self, frames: Path, heldout: Path, msgtype: str, heldout_every: int = HELDOUT_EVERY):
        if msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
            raise ValueError(f"cannot record {msgtype}; expected {IMAGE_TYPE} or {COMPRESSED_TYPE}")
        self.msgtype, self.topic = msgtype, learn_topic(msgtype)
        self.heldout_every = int(heldout_every)
        self.n_train = self.n_heldout = 0
        self._writers: list[Writer] = []
        self._connections = []
        ts = typestore()
        for path in (frames, heldout):
            writer = Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3)
            writer.open()
            self._writers.append(writer)
            self._connections.append(writer.add_connection(self.topic, msgtype, typestore=ts))

    @property
    def total(self) -> int:
        """Frames written so far."""
        return self.n_train + self.n_heldout

    def write(self, stamp_ns: int, cdr: bytes) -> None:
        """Writes one frame's CDR bytes (log time ``stamp_ns``) to the training or held-out bag.

        Raises:
            OSError: E.g. the disk is full (the frames written so far stay readable after close).
        """
        heldout = (self.total + 1) % self.heldout_every == 0
        index = 1 if heldout else 0
        self._writers[index].write(self._connections[index], int(stamp_ns), cdr)
        if heldout:
            self.n_heldout += 1
        else:
            self.n_train += 1

    def close(self) -> None:
        """Finishes both bags (metadata.yaml); safe to call twice."""
        writers, self._writers = self._writers, []
        error = None
        for writer in writers:
            try:
                writer.close()
            except Exception as err:  # noqa: BLE001 - close the other one too
                error = error or err
        if error is not None:
            raise error


@dataclass(frozen=True)
class Budget:
    """When collection stops: ``duration_s`` and/or ``max_frames`` (0 = no limit; both 0 = the default)."""

    duration_s: float
    max_frames: int

    @classmethod
    def from_goal(cls, duration_s: float, max_frames: int) -> Budget:
        """Applies the both-zero default (:data:`DEFAULT_FRAMES` frames)."""
        if duration_s < 0 or not math.isfinite(duration_s):
            raise ValueError(f"duration_s must be >= 0 and finite, got {duration_s}")
        if duration_s == 0 and max_frames == 0:
            return cls(0.0, DEFAULT_FRAMES)
        return cls(float(duration_s), int(max_frames))

    def done(self, frames: int, elapsed_s: float) -> bool:
        """True once either limit is reached."""
        return (self.max_frames > 0 and frames >= self.max_frames) or (
            self.duration_s > 0 and elapsed_s >= self.duration_s
        )

    def eta_s(self, frames: int, elapsed_s: float) -> float:
        """Estimated seconds left (NaN when unknown)."""
        left = []
        if self.duration_s > 0:
            left.append(max(self.duration_s - elapsed_s, 0.0))
        if self.max_frames > 0 and frames > 0:
            left.append(max(self.max_frames - frames, 0) * elapsed_s / frames)
        return min(left) if left else math.nan


class RateLimiter:
    """At most ``rate_hz`` frames per second per camera (0 = every frame), by stamp."""

    def __init__(self, rate_hz: float):
        if rate_hz < 0 or not math.isfinite(rate_hz):
            raise ValueError(f"max_rate_hz must be >= 0 and finite, got {rate_hz}")
        self.period_ns = int(1e9 / rate_hz) if rate_hz > 0 else 0
        self._last: dict[object, int] = {}

    def accept(self, key: object, stamp_ns: int) -> bool:
        """Whether the frame of ``key`` stamped ``stamp_ns`` is kept."""
        last = self._last.get(key)
        if last is not None and 0 <= stamp_ns - last < self.period_ns:
            return False
        self._last[key] = stamp_ns
        return True


def bag_image_topics(bag: Path) -> dict[str, str]:
    """Image topics of a recording: topic -> msgtype.

    Raises:
        BagError: Not a readable bag.
    """
    with BagSource(bag) as source:
        return {t: m for t, m in source.topics.items() if m in (IMAGE_TYPE, COMPRESSED_TYPE)}


def pick_bag_topic(bag: Path, wanted: list[str]) -> tuple[str, str]:
    """The image topic to learn from: one of ``wanted`` (camera topics or names) in the bag, or its only one.

    Raises:
        BagError: No image topic, or several and none of ``wanted`` among them.
    """
    topics = bag_image_topics(bag)
    if not topics:
        raise BagError(f"{bag}: no sensor_msgs Image or CompressedImage topic")
    for want in wanted:
        for topic, msgtype in topics.items():
            if topic == want or topic.strip("/") == want.strip("/"):
                return topic, msgtype
    if len(topics) == 1:
        return next(iter(topics.items()))
    raise BagError(
        f"{bag}: several image topics ({', '.join(sorted(topics))}); name the one to learn from in 'cameras'"
    )


def copy_bag_frames(
    bag: Path, topic: str, recorder: FrameRecorder, budget: Budget, limiter: RateLimiter, stopped
) -> None:
    """Copies ``topic``'s frames from a recording into the run's bags, within the budget and rate.

    ``budget.duration_s`` counts recording time from the first frame. ``stopped()`` is polled per frame.
    """
    with BagSource(bag) as source:
        first = None
        for _, _, log_ns, raw in source.messages({topic}):
            if stopped():
                return
            first = log_ns if first is None else first
            if budget.done(recorder.total, (log_ns - first) / 1e9):
                return
            if limiter.accept(topic, log_ns):
                recorder.write(log_ns, bytes(raw))
