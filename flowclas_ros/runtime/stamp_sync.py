"""Match side streams (depth, camera info) to a colour frame by header stamp, never waiting (no ROS).

Each camera's depth (and camera-info) callback pushes ``(stamp, message)`` into
a small :class:`StampBuffer`; the worker asks for the entry nearest to the
colour frame's stamp within a tolerance. Nothing blocks: a late or missing
depth gives None and the frame's 2D outputs go out as usual. The buffer is
bounded (oldest entries fall out), so memory stays flat however fast the
depth camera publishes.

Sizing: the worker looks up depth after the model's forward pass (so depth
that arrives slightly after the colour frame still matches), so the buffer
must span the colour frame's age at that point: ``capacity >= depth rate x
(model latency + one frame period)``; 30 entries cover 1 s at 30 Hz.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """A ``builtin_interfaces/Time`` (``sec``, ``nanosec``) as integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


class StampBuffer(Generic[T]):
    """Thread-safe ring of the last ``capacity`` (stamp, item) pairs of one stream.

    ``push`` is O(1); ``nearest`` is O(capacity). Entries are kept in arrival order, so
    out-of-order stamps are handled (the search looks at every entry).
    """

    def __init__(self, capacity: int = 30):
        if capacity < 1:
            raise ValueError(f"StampBuffer capacity must be >= 1, got {capacity}")
        self._items: deque[tuple[int, T]] = deque(maxlen=int(capacity))
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """Most entries kept."""
        return self._items.maxlen or 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def push(self, stamp_ns: int, item: T) -> None:
        """Stores ``item`` with its stamp; the oldest entry falls out when full."""
        with self._lock:
            self._items.append((int(stamp_ns), item))

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> T | None:
        """The item whose stamp is closest to ``stamp_ns``, if within ``tolerance_ns`` (inclusive).

        Ties go to the earlier-received entry. Returns None when the buffer is empty or every
        stamp is farther away than the tolerance. Never waits.
        """
        best: T | None = None
        best_gap = int(tolerance_ns)
        if best_gap < 0:
            return None
        found = False
        with self._lock:
            for stamp, item in self._items:
                gap = abs(stamp - stamp_ns)
                if gap < best_gap or (gap == best_gap and not found):
                    best, best_gap, found = item, gap, True
        return best

    def latest(self) -> tuple[int, T] | None:
        """The most recently pushed (stamp, item), or None."""
        with self._lock:
            return self._items[-1] if self._items else None

    def clear(self) -> None:
        """Drops every entry (e.g. on deactivate)."""
        with self._lock:
            self._items.clear()
