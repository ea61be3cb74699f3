"""The "Review" section of ``report.md``: counts, the timeline and the events with their peak frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowclas_ros.evaluation.review import EVENTS_DIR

_SHOWN_EVENTS = 20
"""Events listed (strongest first) and shown as images in the report; events.csv has them all."""


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def frame_path(event: dict[str, Any]) -> str:
    """Relative path of an event's peak overlay."""
    return f"{EVENTS_DIR}/{event['peak_frame']}"


def review_markdown(review: dict[str, Any]) -> str:
    """Markdown of ``metrics.json["review"]`` (see :class:`~flowclas_ros.evaluation.review_recorder`)."""
    r = review
    thr = r["image_threshold"]
    lines = [
        "## Review of the recording (no labels needed)",
        "",
        "Every frame is scored as the node would score it; a frame is **flagged** when the node "
        f"would publish `is_anomalous` (image score >= image threshold {_num(thr, 6)}, "
        f"from {r['image_threshold_source']}). Consecutive flagged frames, and flagged frames at most "
        f"{r['merge_gap_s']} s apart, form one **event**. Times are seconds since the first frame "
        f"(stamp {_num(r['first_stamp'], 3)}). Per-frame table: "
        f"[`{r['files']['frames']}`]({r['files']['frames']}); events: "
        f"[`{r['files']['events']}`]({r['files']['events']}).",
        "",
        "| frames | flagged | flagged fraction | events | events per minute | duration (s) |",
        "|---|---|---|---|---|---|",
        f"| {r['frames']} | {r['flagged']} | {_num(r['flagged_fraction'])} | {r['events']} | "
        f"{_num(r['events_per_minute'], 2)} | {_num(r['duration_s'], 2)} |",
        "",
        f"![timeline]({r['files']['timeline']})",
        "",
    ]
    if thr is None:
        lines += ["> **No image threshold is known** (pass --image-threshold): no frame is flagged.", ""]
    if r["peak_frames_missing"]:
        lines += [
            f"> {r['peak_frames_missing']} event peak frame(s) could not be re-read for an overlay.",
            "",
        ]
    shown = sorted(r["strongest_events"], key=lambda e: -e["peak_score"])[:_SHOWN_EVENTS]
    if not shown:
        return "\n".join(lines)
    lines += [
        f"### Strongest events ({len(shown)} of {r['events']}, highest peak score first)",
        "",
        "| start (s) | end (s) | frames | peak score | peak at (s) | peak frame |",
        "|---|---|---|---|---|---|",
    ]
    t0 = r["first_stamp"]
    for e in shown:
        frame = frame_path(e)
        lines.append(
            f"| {e['start'] - t0:.2f} | {e['end'] - t0:.2f} | {e['frames']} | {e['peak_score']:.4g} | "
            f"{e['peak_stamp'] - t0:.2f} | [{e['peak_frame']}]({frame}) |"
        )
    lines.append("")
    lines += [f"![event peak at {e['peak_stamp'] - t0:.2f} s]({frame_path(e)})" for e in shown]
    lines.append("")
    return "\n".join(lines)


def append_review_section(report: Path, review: dict[str, Any]) -> None:
    """Appends the review section to the written report."""
    text = report.read_text()
    report.write_text(text.rstrip("\n") + "\n\n" + review_markdown(review))
