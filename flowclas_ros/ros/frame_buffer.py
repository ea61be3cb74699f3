"""Newest-frame slots: one per camera, overwritten by callbacks, drained by the worker (no rclpy).

There is no queue: a frame that is replaced before the worker takes it is
dropped and counted. So latency stays bounded by one forward pass however
fast the cameras publish.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

ACTIVE_S = 1.0
"""A camera that delivered a frame within this many seconds is worth waiting for in a batch."""


@dataclass
class Frame:
    """A received message waiting for the worker.

    Attributes:
        camera: Camera index.
        msg: The Image / CompressedImage, still encoded (decoding happens in the worker).
        received_ns: ``time.monotonic_ns()`` at the callback.
    """

    camera: int
    msg: Any
    received_ns: int


class FrameSlots:
    """Thread-safe latest-frame store for ``num_cameras`` cameras.

    ``put`` is O(1) and never blocks on the worker; ``take`` waits for frames
    and returns the newest one of up to ``max_count`` cameras, rotating the
    starting camera so that no camera starves when there are more cameras than
    batch slots.
    """

    def __init__(self, num_cameras: int):
        self._cond = threading.Condition()
        self._slots: list[Frame | None] = [None] * num_cameras
        self._next = 0
        self._closed = False
        self.received = [0] * num_cameras
        self.dropped = [0] * num_cameras
        self._last_put = [-float("inf")] * num_cameras

    def put(self, frame: Frame) -> None:
        """Stores ``frame`` as its camera's newest; a frame it replaces counts as dropped."""
        with self._cond:
            if self._slots[frame.camera] is not None:
                self.dropped[frame.camera] += 1
            self._slots[frame.camera] = frame
            self._last_put[frame.camera] = time.monotonic()
            self.received[frame.camera] += 1
            self._cond.notify()

    def take(self, max_count: int, timeout: float, gather_s: float = 0.0) -> list[Frame]:
        """Waits up to ``timeout`` s for frames; returns at most ``max_count`` (empty on timeout/close).

        Once one frame is there, waits up to ``gather_s`` more for the other recently active
        cameras, so that cameras triggered together share one forward instead of queueing
        behind each other.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._filled() > 0, timeout)
            if gather_s > 0.0 and not self._closed:
                wanted = min(max_count, self._active(time.monotonic()))
                self._cond.wait_for(lambda: self._closed or self._filled() >= wanted, gather_s)
            if self._closed:
                return []
            count = len(self._slots)
            taken: list[Frame] = []
            for offset in range(count):
                index = (self._next + offset) % count
                frame = self._slots[index]
                if frame is None:
                    continue
                taken.append(frame)
                self._slots[index] = None
                if len(taken) >= max_count:
                    self._next = (index + 1) % count
                    break
            return taken

    def _filled(self) -> int:
        return sum(slot is not None for slot in self._slots)

    def _active(self, now: float) -> int:
        return sum(now - t <= ACTIVE_S for t in self._last_put)

    def counts(self) -> tuple[list[int], list[int]]:
        """Copies of the (received, dropped) counters per camera."""
        with self._cond:
            return list(self.received), list(self.dropped)

    def close(self) -> None:
        """Wakes the worker and makes every later ``take`` return empty."""
        with self._cond:
            self._closed = True
            self._slots = [None] * len(self._slots)
            self._cond.notify_all()
