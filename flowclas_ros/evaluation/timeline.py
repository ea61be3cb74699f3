"""``timeline.png`` of a review: image score against time, the image threshold, events shaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flowclas_ros.evaluation.review import Event, FrameRows


def plot_timeline(
    rows: FrameRows,
    flags: Sequence[bool],
    events: Sequence[Event],
    image_threshold: float | None,
    path: Path,
) -> None:
    """Plots the image score of every frame against seconds since the first stamp.

    Events are shaded from their first to their last flagged frame, at least one frame period
    wide (so a one-frame event is visible), flagged frames are marked in red and the image
    threshold is a dashed line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = rows.order()
    stamps = np.asarray(rows.stamps_ns, np.int64)[order]
    t0 = int(stamps[0]) if stamps.size else 0
    t = (stamps - t0) / 1e9
    scores = np.asarray(rows.scores, np.float64)[order]
    flagged = np.asarray(flags, bool)[order] if len(flags) else np.zeros(0, bool)
    period = float(np.median(np.diff(t))) if t.size > 1 else 0.1
    fig, ax = plt.subplots(figsize=(11, 3.6))
    for number, ev in enumerate(events, 1):
        start, end = (ev.start_ns - t0) / 1e9, (ev.end_ns - t0) / 1e9
        pad = max(0.0, period - (end - start)) / 2
        ax.axvspan(
            start - pad, end + pad, color="orange", alpha=0.3, lw=0, label="event" if number == 1 else None
        )
    ax.plot(t, scores, lw=0.8, color="tab:blue", label="image score")
    if flagged.any():
        ax.plot(t[flagged], scores[flagged], ".", ms=3, color="red", label="flagged")
    if image_threshold is not None:
        ax.axhline(
            image_threshold, ls="--", lw=1.0, color="red", label=f"image threshold {image_threshold:.4g}"
        )
    ax.set(xlabel="time since the first frame (s)", ylabel="image score")
    ax.set_title(f"{len(t)} frames, {int(flagged.sum())} flagged, {len(events)} events")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
