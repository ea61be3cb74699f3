"""Newest-frame slots: one per camera, overwritten by callbacks, drained by the worker (no rclpy).

There is no queue: a frame that is replaced before the worker takes it is
dropped and counted. So latency stays bounded by one forward pass however
fast the cameras publish.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


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

    def put(self, frame: Frame) -> None:
        """Stores ``frame`` as its camera's newest; a frame it replaces counts as dropped."""
        with self._cond:
            if self._slots[frame.camera] is not None:
                self.dropped[frame.camera] += 1
            self._slots[frame.camera] = frame
            self.received[frame.camera] += 1
            self._cond.notify()

    def take(self, max_count: int, timeout: float) -> list[Frame]:
        """Waits up to ``timeout`` s for frames; returns at most ``max_count`` (empty on timeout/close)."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or any(s is not None for s in self._slots), timeout)
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
