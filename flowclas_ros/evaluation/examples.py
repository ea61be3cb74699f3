"""A bounded keeper of the best and worst frames for the report (thumbnails only)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

THUMB_SIDE = 320
"""Longest side of the stored thumbnails, in pixels (bounds the keeper's memory)."""


@dataclass
class Example:
    """A frame kept for the report, downscaled.

    Attributes:
        name: Frame name.
        key: The ranking value (e.g. the frame's pixel AUROC).
        image: (h, w, 3) uint8 RGB thumbnail.
        score_map: (h, w) float32 thumbnail of the scores.
        mask: (h, w) uint8 thumbnail of the labels, or None.
        image_score: The frame's image-level score.
    """

    name: str
    key: float
    image: np.ndarray
    score_map: np.ndarray
    mask: np.ndarray | None
    image_score: float


def make_example(
    name: str,
    key: float,
    image: np.ndarray,
    score_map: np.ndarray,
    mask: np.ndarray | None,
    image_score: float,
    max_side: int = THUMB_SIDE,
) -> Example:
    """Downscale a frame so its longest side is at most ``max_side`` (labels by nearest neighbour)."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        score_map = cv2.resize(score_map.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        if mask is not None:
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return Example(
        name,
        float(key),
        image.copy(),
        score_map.astype(np.float32, copy=True),
        None if mask is None else mask.copy(),
        float(image_score),
    )


class ExampleKeeper:
    """Keeps the ``k`` frames with the lowest and the ``k`` with the highest key (ties: earliest wins).

    The thumbnail is built only when the frame is kept, so offering a frame
    that does not make either list costs a comparison.
    """

    def __init__(self, k: int) -> None:
        """Keep up to ``k`` frames at each end (0 keeps none)."""
        self.k = max(0, int(k))
        self._seq = 0
        # Lowest keys: max-heap via negation; the root is the entry to evict next.
        self._low: list[tuple[float, int, Example]] = []
        # Highest keys: min-heap; later frames are evicted first among ties.
        self._high: list[tuple[float, int, Example]] = []

    def __len__(self) -> int:
        return len({id(e[2]) for e in self._low} | {id(e[2]) for e in self._high})

    def offer(self, key: float, build: Callable[[], Example]) -> None:
        """Consider a frame with ranking ``key``; ``build`` makes its :class:`Example` if it is kept."""
        if self.k == 0 or not np.isfinite(key):
            return
        seq = self._seq
        self._seq += 1
        keep_low = len(self._low) < self.k or (-key, -seq) > self._low[0][:2]
        keep_high = len(self._high) < self.k or (key, -seq) > self._high[0][:2]
        if not (keep_low or keep_high):
            return
        example = build()
        if keep_low:
            entry = (-key, -seq, example)
            if len(self._low) < self.k:
                heapq.heappush(self._low, entry)
            else:
                heapq.heapreplace(self._low, entry)
        if keep_high:
            entry = (key, -seq, example)
            if len(self._high) < self.k:
                heapq.heappush(self._high, entry)
            else:
                heapq.heapreplace(self._high, entry)

    def lowest(self) -> list[Example]:
        """The kept frames with the lowest keys, lowest first."""
        return [e for _, _, e in sorted(self._low, key=lambda t: (-t[0], -t[1]))]

    def highest(self) -> list[Example]:
        """The kept frames with the highest keys, highest first."""
        return [e for _, _, e in sorted(self._high, key=lambda t: (-t[0], -t[1]))]
