"""Streams a recording's scored frames into the review outputs (frames.csv, events, timeline).

Memory holds the per-frame rows (:class:`~flowclas_ros.evaluation.review.FrameRows`) and,
while an event is open, the image and score map of its best frame so far, never more.
While stamps arrive in order (the usual bag), each event's peak overlay is written the
moment the event closes. If a stamp goes backwards (a bag logged out of stamp order, or
frames held back waiting for their masks), events can only be known once every stamp is;
the peaks that streaming did not see are then fetched again (``refetch``: re-read the bag and
score just those frames) and overlays of peaks that are no longer peaks are removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowclas_ros.evaluation.review import (
    EVENTS_DIR,
    EVENTS_FILE,
    FRAMES_FILE,
    Event,
    EventBuilder,
    FrameRows,
    merge_events,
    peak_frame_name,
    review_summary,
    write_events_csv,
    write_frames_csv,
)
from flowclas_ros.runtime.decision import is_anomalous
from flowclas_ros.runtime.postprocess import anomalous_fraction, find_regions, render_overlay

if TYPE_CHECKING:
    from flowclas_ros.evaluation.frames import EvalFrame
    from flowclas_ros.runtime.base import Prediction

TIMELINE_FILE = "timeline.png"
_MIN_SIDE = 320
"""Event overlays of smaller frames are upscaled to this longer side (as the report's examples)."""

Refetch = Callable[[set[int]], Iterable[tuple[int, np.ndarray, np.ndarray, float]]]
"""Message indices -> (index, RGB image, score map, image score) of those frames, any order."""


@dataclass
class _Peak:
    """The best frame so far of the open event (the only images kept)."""

    index: int
    stamp_ns: int
    image: np.ndarray
    score_map: np.ndarray
    image_score: float


class ReviewRecorder:
    """Collects one row per scored frame and writes the label-free review (see the module doc).

    Args:
        out_dir: Output folder (``frames.csv``, ``events.csv``, ``timeline.png``, ``events/``).
        pixel_threshold: Pixel threshold for ``anomalous_fraction`` and the overlay's boxes
            (None: the fraction is left empty).
        image_threshold: The image decision's threshold (None: nothing is flagged).
        image_threshold_source: Where it came from, for the report.
        merge_gap_s: Largest gap between two flagged frames of one event.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        pixel_threshold: float | None,
        image_threshold: float | None,
        image_threshold_source: str = "",
        merge_gap_s: float,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.events_dir = self.out_dir / EVENTS_DIR
        self.pixel_threshold = pixel_threshold
        self.image_threshold = image_threshold
        self.image_threshold_source = image_threshold_source
        self.merge_gap_s = merge_gap_s
        self.rows = FrameRows()
        self._builder = EventBuilder(merge_gap_s)
        self._peak: _Peak | None = None
        self._in_order = True
        self._last_ns: int | None = None
        self.written: dict[int, str] = {}  # peak message index -> overlay file written while streaming
        self.n_refetched = 0
        for old in self.events_dir.glob("*.png") if self.events_dir.is_dir() else ():
            old.unlink()  # a previous review into the same folder: its events are not this run's

    def add(
        self, stamp_ns: int, index: int, image: np.ndarray, score_map: np.ndarray, image_score: float
    ) -> None:
        """Adds one scored frame (any order; in stamp order it streams the event peaks)."""
        fraction = (
            float("nan")
            if self.pixel_threshold is None
            else anomalous_fraction(score_map, self.pixel_threshold)
        )
        self.rows.add(stamp_ns, index, image_score, fraction)
        if self._in_order and self._last_ns is not None and stamp_ns < self._last_ns:
            self._in_order, self._peak = False, None  # events are decided at the end (see module doc)
        self._last_ns = stamp_ns if self._last_ns is None else max(self._last_ns, stamp_ns)
        if not self._in_order:
            return
        flagged = self.image_threshold is not None and is_anomalous(image_score, self.image_threshold)
        closed = self._builder.add(stamp_ns, index, image_score, flagged)
        if closed is not None:
            self._write_peak()
        ev = self._builder.open
        if flagged and ev is not None and ev.peak_index == index and ev.peak_ns == stamp_ns:
            self._peak = _Peak(index, stamp_ns, image.copy(), np.array(score_map, np.float32), image_score)

    def on_result(self, frame: EvalFrame, prediction: Prediction) -> None:
        """:func:`~flowclas_ros.evaluation.runner.evaluate_frames`'s hook: adds a bag frame."""
        if frame.stamp_ns is None:
            raise ValueError(f"{frame.name}: the review needs stamped (bag) frames")
        self.add(frame.stamp_ns, frame.index, frame.image, prediction.score_map, prediction.image_score)

    def _write_peak(self) -> None:
        """Writes the closed event's peak overlay and drops its images."""
        if self._peak is None:
            return
        p, self._peak = self._peak, None
        self.written[p.index] = self._render(p.stamp_ns, p.image, p.score_map, p.image_score)

    def _render(self, stamp_ns: int, image: np.ndarray, score_map: np.ndarray, image_score: float) -> str:
        """The node's overlay of one frame, labelled with the image decision; returns the file name."""
        import cv2

        from flowclas_ros.data.images.folder import write_rgb

        scale = _MIN_SIDE / max(image.shape[:2])
        if scale > 1.0:  # tiny frames (tests, thumbnails): upscale so the label stays legible
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
            score_map = cv2.resize(score_map, size, interpolation=cv2.INTER_LINEAR)
        regions = (
            None
            if self.pixel_threshold is None
            else find_regions(score_map, self.pixel_threshold, max_regions=5)
        )
        # The label compares the image score with the threshold passed here: the image threshold,
        # so the overlay's ANOMALY/normal verdict is the frame's ``flagged``.
        assert self.image_threshold is not None  # only flagged frames are rendered
        rendered = render_overlay(image, score_map, self.image_threshold, regions, image_score=image_score)
        self.events_dir.mkdir(parents=True, exist_ok=True)
        name = peak_frame_name(stamp_ns)
        write_rgb(self.events_dir / name, rendered)
        return name

    def finish(self, refetch: Refetch | None = None) -> dict[str, Any]:
        """Writes every review file; returns ``metrics.json["review"]``.

        Args:
            refetch: Scores given frames again, for event peaks streaming did not keep (stamps
                out of order). None leaves such events without an overlay (counted).
        """
        from flowclas_ros.evaluation.timeline import plot_timeline

        if self._in_order:
            self._builder.close()
            self._write_peak()
        flags = self.rows.flags(self.image_threshold)
        events = merge_events(
            self.rows.stamps_ns, self.rows.scores, flags, self.rows.indices, self.merge_gap_s
        )
        n_missing = self._complete_peaks(events, refetch)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_frames_csv(self.out_dir / FRAMES_FILE, self.rows, flags, events)
        write_events_csv(self.out_dir / EVENTS_FILE, events)
        plot_timeline(self.rows, flags, events, self.image_threshold, self.out_dir / TIMELINE_FILE)
        return {
            **review_summary(self.rows, flags, events),
            "merge_gap_s": self.merge_gap_s,
            "image_threshold": self.image_threshold,
            "image_threshold_source": self.image_threshold_source,
            "pixel_threshold": self.pixel_threshold,
            "stamps_in_order": self._in_order,
            "peak_frames_rescored": self.n_refetched,
            "peak_frames_missing": n_missing,
            "files": {
                "frames": FRAMES_FILE,
                "events": EVENTS_FILE,
                "timeline": TIMELINE_FILE,
                "event_frames": f"{EVENTS_DIR}/",
            },
            "strongest_events": [
                {
                    "start": e.start_ns / 1e9,
                    "end": e.end_ns / 1e9,
                    "frames": e.frames,
                    "peak_score": e.peak_score,
                    "peak_stamp": e.peak_ns / 1e9,
                    "peak_frame": e.peak_frame,
                }
                for e in sorted(sorted(events, key=lambda e: -e.peak_score)[:_LISTED_EVENTS], key=_start)
            ],
        }

    def _complete_peaks(self, events: list[Event], refetch: Refetch | None) -> int:
        """Ensures one overlay per event peak (and no other); returns how many are missing."""
        wanted = {e.peak_index: e for e in events}
        for index, name in list(self.written.items()):
            if index not in wanted:
                (self.events_dir / name).unlink(missing_ok=True)
                del self.written[index]
        missing = set(wanted) - set(self.written)
        if missing and refetch is not None:
            for index, image, score_map, image_score in refetch(missing):
                if index in missing:
                    ev = wanted[index]
                    self.written[index] = self._render(ev.peak_ns, image, score_map, image_score)
                    missing.discard(index)
                    self.n_refetched += 1
        return len(missing)


_LISTED_EVENTS = 100
"""metrics.json lists the strongest events, at most this many, in time order (events.csv has all)."""


def _start(event: Event) -> int:
    return event.start_ns
