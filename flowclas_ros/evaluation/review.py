"""Label-free review of a recording: per-frame rows, flagged events and their CSV files.

``flowclas-eval --bag`` scores every frame the way the node would and keeps one small row
per frame (:class:`FrameRows`: stamp, image score, anomalous pixel fraction, message index),
never the images. A frame is **flagged** when the node would publish ``is_anomalous``
(:func:`flowclas_ros.runtime.decision.is_anomalous`). Flagged frames, in stamp order, form
**events**: a run of consecutive flagged frames is one event, and two runs whose flagged
frames are at most ``merge_gap`` apart (last of one to first of the next) are one event. So
every flagged frame lies in exactly one event and every event starts and ends on flagged
frames. Gaps are compared in integer nanoseconds, so a gap of exactly ``merge_gap`` merges.
"""

from __future__ import annotations

import array
import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowclas_ros.runtime.decision import is_anomalous

FRAMES_FILE = "frames.csv"
EVENTS_FILE = "events.csv"
EVENTS_DIR = "events"
FRAME_COLUMNS = ("stamp", "index", "image_score", "anomalous_fraction", "flagged", "event")
EVENT_COLUMNS = ("event", "start", "end", "duration", "frames", "peak_score", "peak_stamp", "peak_frame")
DEFAULT_MERGE_GAP_S = 1.0


def stamp_text(stamp_ns: int) -> str:
    """A stamp as exact decimal seconds, ``sec.nanosec`` (parses as a float; names event files)."""
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


def peak_frame_name(stamp_ns: int) -> str:
    """File name of an event's peak overlay under ``events/``: ``<peak_stamp>.png``."""
    return f"{stamp_text(stamp_ns)}.png"


@dataclass
class Event:
    """One event: a maximal stretch of flagged frames (see the module doc).

    Attributes:
        start_ns: Stamp of its first flagged frame.
        end_ns: Stamp of its last flagged frame.
        frames: Number of flagged frames in it.
        peak_score: Highest image score in it (the first such frame on ties).
        peak_ns: Stamp of the peak frame.
        peak_index: Message index (position on the image topic) of the peak frame.
    """

    start_ns: int
    end_ns: int
    frames: int
    peak_score: float
    peak_ns: int
    peak_index: int

    @property
    def peak_frame(self) -> str:
        """File name of the peak frame's overlay under ``events/``."""
        return peak_frame_name(self.peak_ns)


class EventBuilder:
    """Builds events from frames given in stamp order, one frame at a time (streaming).

    ``add`` returns the event that the frame closed, if any; ``close`` ends the last one.
    """

    def __init__(self, merge_gap_s: float = DEFAULT_MERGE_GAP_S) -> None:
        """Args: merge_gap_s: largest gap between two flagged frames of one event (seconds, >= 0)."""
        if not (merge_gap_s >= 0 and math.isfinite(merge_gap_s)):
            raise ValueError(f"merge gap must be a finite number >= 0, got {merge_gap_s}")
        self.merge_gap_ns = round(merge_gap_s * 1e9)
        self.open: Event | None = None
        self._previous_flagged = False

    def add(self, stamp_ns: int, index: int, image_score: float, flagged: bool) -> Event | None:
        """Adds one frame (stamps must not decrease); returns the event it closed, or None.

        Whether the frame opened a new event or extended the open one is ``self.open`` afterwards
        (a new event has ``start_ns == stamp_ns`` and one frame).
        """
        closed = None
        if flagged:
            ev = self.open
            if ev is not None and (self._previous_flagged or stamp_ns - ev.end_ns <= self.merge_gap_ns):
                ev.end_ns, ev.frames = stamp_ns, ev.frames + 1
                if image_score > ev.peak_score:
                    ev.peak_score, ev.peak_ns, ev.peak_index = image_score, stamp_ns, index
            else:
                closed = ev
                self.open = Event(stamp_ns, stamp_ns, 1, image_score, stamp_ns, index)
        elif self.open is not None and stamp_ns - self.open.end_ns > self.merge_gap_ns:
            closed, self.open = self.open, None  # no later flagged frame can join it any more
        self._previous_flagged = flagged
        return closed

    def close(self) -> Event | None:
        """Ends the open event (at the end of the recording) and returns it."""
        closed, self.open = self.open, None
        self._previous_flagged = False
        return closed


def merge_events(
    stamps_ns: Sequence[int],
    scores: Sequence[float],
    flagged: Sequence[bool],
    indices: Sequence[int] | None = None,
    merge_gap_s: float = DEFAULT_MERGE_GAP_S,
) -> list[Event]:
    """Events of frames given in any order (sorted by stamp here; equal stamps keep their order).

    Args:
        stamps_ns: Header stamps in nanoseconds.
        scores: Image scores.
        flagged: The image decision of each frame.
        indices: Message indices (default: positions in the given sequences).
        merge_gap_s: See :class:`EventBuilder`.

    Returns:
        The events in stamp order.
    """
    if not len(stamps_ns) == len(scores) == len(flagged):
        raise ValueError("stamps, scores and flags must have the same length")
    indices = range(len(stamps_ns)) if indices is None else indices
    builder = EventBuilder(merge_gap_s)
    events = []
    for k in sorted(range(len(stamps_ns)), key=stamps_ns.__getitem__):
        closed = builder.add(int(stamps_ns[k]), int(indices[k]), float(scores[k]), bool(flagged[k]))
        if closed is not None:
            events.append(closed)
    last = builder.close()
    return events + ([last] if last is not None else [])


class FrameRows:
    """The per-frame table, a few numbers per frame in compact arrays (no images)."""

    def __init__(self) -> None:  # noqa: D107
        self.stamps_ns = array.array("q")
        self.indices = array.array("q")
        self.scores = array.array("d")
        self.fractions = array.array("d")  # NaN when no pixel threshold is known

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def add(self, stamp_ns: int, index: int, image_score: float, anomalous_fraction: float) -> None:
        """Appends one frame's row."""
        self.stamps_ns.append(int(stamp_ns))
        self.indices.append(int(index))
        self.scores.append(float(image_score))
        self.fractions.append(float(anomalous_fraction))

    def flags(self, image_threshold: float | None) -> list[bool]:
        """The node's image decision per frame (all False without a threshold)."""
        if image_threshold is None:
            return [False] * len(self)
        return [is_anomalous(s, image_threshold) for s in self.scores]

    def order(self) -> list[int]:
        """Row positions in stamp order (stable: equal stamps keep their reading order)."""
        return sorted(range(len(self)), key=self.stamps_ns.__getitem__)


def _number(value: float) -> str:
    """A float for CSV: the shortest text that reads back exactly; empty for NaN."""
    return "" if math.isnan(value) else repr(float(value))


def event_of_rows(rows: FrameRows, order: Sequence[int], events: Sequence[Event]) -> dict[int, int]:
    """Row position -> 1-based event number, for the flagged frames inside the events."""
    out: dict[int, int] = {}
    k = 0
    for pos in order:
        stamp = rows.stamps_ns[pos]
        while k < len(events) and stamp > events[k].end_ns:
            k += 1
        if k < len(events) and events[k].start_ns <= stamp:
            out[pos] = k + 1
    return out


def write_frames_csv(path: Path, rows: FrameRows, flags: Sequence[bool], events: Sequence[Event]) -> None:
    """``frames.csv``: one row per frame in stamp order (``event``: its event number if flagged)."""
    order = rows.order()
    event_of = event_of_rows(rows, order, events)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FRAME_COLUMNS)
        for pos in order:
            writer.writerow(
                (
                    stamp_text(rows.stamps_ns[pos]),
                    rows.indices[pos],
                    _number(rows.scores[pos]),
                    _number(rows.fractions[pos]),
                    int(flags[pos]),
                    event_of[pos] if flags[pos] and pos in event_of else "",
                )
            )


def event_rows(events: Iterable[Event]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``events.csv`` (columns :data:`EVENT_COLUMNS`)."""
    for number, ev in enumerate(events, 1):
        yield (
            number,
            stamp_text(ev.start_ns),
            stamp_text(ev.end_ns),
            f"{(ev.end_ns - ev.start_ns) / 1e9:.9f}",
            ev.frames,
            _number(ev.peak_score),
            stamp_text(ev.peak_ns),
            ev.peak_frame,
        )


def write_events_csv(path: Path, events: Sequence[Event]) -> None:
    """``events.csv``: one row per event in stamp order (just the header when there is none)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EVENT_COLUMNS)
        writer.writerows(event_rows(events))


def review_summary(rows: FrameRows, flags: Sequence[bool], events: Sequence[Event]) -> dict[str, Any]:
    """The counts of ``metrics.json["review"]``: frames, flagged, events, rates and duration."""
    n, n_flagged = len(rows), sum(map(bool, flags))
    duration = (max(rows.stamps_ns) - min(rows.stamps_ns)) / 1e9 if n else 0.0
    return {
        "frames": n,
        "flagged": n_flagged,
        "events": len(events),
        "flagged_fraction": n_flagged / n if n else None,
        "first_stamp": min(rows.stamps_ns) / 1e9 if n else None,
        "duration_s": duration,
        # None for a recording of no duration (one frame, or all frames with one stamp).
        "events_per_minute": len(events) / (duration / 60.0) if duration > 0 else None,
        "longest_event_s": max(((e.end_ns - e.start_ns) / 1e9 for e in events), default=None),
        "peak_score": max((e.peak_score for e in events), default=None),
    }
