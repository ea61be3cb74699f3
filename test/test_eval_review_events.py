"""Label-free review, the parts without a model: event merging, the CSV files, the streaming recorder."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

from flowclas_ros.evaluation.review import (
    EVENT_COLUMNS,
    FRAME_COLUMNS,
    EventBuilder,
    FrameRows,
    merge_events,
    write_events_csv,
    write_frames_csv,
)
from flowclas_ros.evaluation.review_recorder import ReviewRecorder
from flowclas_ros.runtime.decision import image_threshold_in_use, is_anomalous

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S


def _events(stamps_s, flags, gap=1.0, scores=None):
    stamps = [T0 + round(t * S) for t in stamps_s]
    scores = scores if scores is not None else [float(i) for i in range(len(stamps))]
    return merge_events(stamps, scores, flags, merge_gap_s=gap)


def _spans(events):
    return [((e.start_ns - T0) / S, (e.end_ns - T0) / S, e.frames) for e in events]


def test_gap_exactly_the_merge_gap_merges_and_one_ns_more_splits():
    # flagged at 0 and 1.0 s with an unflagged frame between them: gap == merge gap -> one event
    assert _spans(_events([0.0, 0.5, 1.0], [True, False, True], gap=1.0)) == [(0.0, 1.0, 2)]
    stamps = [T0, T0 + S // 2, T0 + S + 1]  # 1 ns over the gap
    split = merge_events(stamps, [1.0, 0.0, 2.0], [True, False, True], merge_gap_s=1.0)
    assert _spans(split) == [(0.0, 0.0, 1), ((S + 1) / S, (S + 1) / S, 1)]


def test_single_frame_events_and_zero_gap():
    spans = _spans(_events([0, 1, 2, 3, 4], [True, False, True, False, True], gap=0.5))
    assert spans == [(0.0, 0.0, 1), (2.0, 2.0, 1), (4.0, 4.0, 1)]
    # merge gap 0: runs of consecutive flagged frames stay one event; runs split at any unflagged frame
    spans = _spans(_events([0, 0.1, 0.2, 0.3, 0.4], [True, True, False, True, True], gap=0.0))
    assert spans == [(0.0, 0.1, 2), (0.3, 0.4, 2)]


def test_a_run_of_consecutive_flagged_frames_is_one_event_even_across_a_hole():
    # 5 s between two neighbouring frames (a hole in the recording): still one run
    assert _spans(_events([0, 0.1, 5.1], [True, True, True], gap=1.0)) == [(0.0, 5.1, 3)]


def test_no_flagged_frame_gives_no_event_and_a_header_only_csv(tmp_path):
    assert _events([0, 1, 2], [False, False, False]) == []
    assert merge_events([], [], []) == []
    write_events_csv(tmp_path / "events.csv", [])
    assert (tmp_path / "events.csv").read_text().splitlines() == [",".join(EVENT_COLUMNS)]


def test_unsorted_stamps_give_the_events_of_the_sorted_frames():
    rng = random.Random(0)
    stamps = [T0 + i * S // 10 for i in range(60)]
    flags = [rng.random() < 0.4 for _ in stamps]
    scores = [rng.random() for _ in stamps]
    expected = merge_events(stamps, scores, flags, merge_gap_s=0.25)
    order = list(range(60))
    rng.shuffle(order)
    shuffled = merge_events(
        [stamps[k] for k in order],
        [scores[k] for k in order],
        [flags[k] for k in order],
        indices=order,
        merge_gap_s=0.25,
    )
    assert shuffled == expected
    assert [e.peak_index for e in expected] == [
        max(
            (k for k in range(60) if flags[k] and e.start_ns <= stamps[k] <= e.end_ns),
            key=lambda k: (scores[k], -k),
        )
        for e in expected
    ]


def test_peak_ties_take_the_first_frame():
    (event,) = _events([0, 0.1, 0.2], [True, True, True], scores=[1.0, 3.0, 3.0])
    assert event.peak_ns == T0 + S // 10 and event.peak_index == 1 and event.peak_score == 3.0


@pytest.mark.parametrize("seed", range(5))
def test_every_flagged_frame_is_in_exactly_one_event_and_events_end_on_flagged_frames(seed):
    rng = random.Random(seed)
    stamps = sorted(T0 + rng.randrange(0, 30 * S) for _ in range(200))
    flags = [rng.random() < 0.3 for _ in stamps]
    events = merge_events(
        stamps, [rng.random() for _ in stamps], flags, merge_gap_s=rng.choice([0, 0.2, 1.0])
    )
    flagged_stamps = {t for t, f in zip(stamps, flags) if f}
    for flagged_t in flagged_stamps:
        assert sum(e.start_ns <= flagged_t <= e.end_ns for e in events) == 1
    for e in events:
        assert e.start_ns in flagged_stamps and e.end_ns in flagged_stamps
        inside = [f for t, f in zip(stamps, flags) if e.start_ns <= t <= e.end_ns]
        assert e.frames == sum(inside)
    assert sum(e.frames for e in events) == len([f for f in flags if f])
    assert all(a.end_ns < b.start_ns for a, b in zip(events, events[1:]))


def test_bad_merge_gap_and_lengths():
    with pytest.raises(ValueError, match="merge gap"):
        EventBuilder(-1.0)
    with pytest.raises(ValueError, match="merge gap"):
        EventBuilder(float("nan"))
    with pytest.raises(ValueError, match="same length"):
        merge_events([1, 2], [1.0], [True, True])


def test_the_decision_is_the_nodes():
    assert is_anomalous(2.0, 2.0) and not is_anomalous(1.9, 2.0) and not is_anomalous(float("nan"), 0.0)
    assert image_threshold_in_use(3.0, 1.0) == 3.0
    assert image_threshold_in_use(None, 1.0) == 1.0 and image_threshold_in_use(float("nan"), 1.0) == 1.0
    assert image_threshold_in_use(None, None) is None


def test_frames_csv_is_in_stamp_order_with_event_numbers(tmp_path):
    rows = FrameRows()
    for stamp_s, score in [(2.0, 5.0), (0.0, 1.0), (2.5, 2.0), (1.0, 6.0), (3.5, 7.0)]:
        rows.add(T0 + round(stamp_s * S), int(stamp_s * 10), score, 0.25)
    flags = rows.flags(4.0)
    events = merge_events(rows.stamps_ns, rows.scores, flags, rows.indices, 1.0)
    write_frames_csv(tmp_path / "frames.csv", rows, flags, events)
    with open(tmp_path / "frames.csv") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == FRAME_COLUMNS
    assert [float(r["stamp"]) - T0 / S for r in table] == [0.0, 1.0, 2.0, 2.5, 3.5]
    assert [r["flagged"] for r in table] == ["0", "1", "1", "0", "1"]
    assert [r["event"] for r in table] == ["", "1", "1", "", "2"]
    assert float(table[2]["image_score"]) == 5.0


def _frame(k: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((20, 24, 3), 10 * k % 256, np.uint8)
    return image, np.full((20, 24), float(k), np.float32)


@pytest.mark.parametrize("shuffle", [False, True])
def test_recorder_streams_peaks_in_order_and_rescores_them_out_of_order(tmp_path, shuffle):
    rng = random.Random(1)
    scores = [rng.uniform(0, 10) for _ in range(40)]
    stamps = [T0 + k * S // 5 for k in range(40)]
    order = list(range(40))
    if shuffle:
        rng.shuffle(order)
    rec = ReviewRecorder(tmp_path, pixel_threshold=5.0, image_threshold=6.0, merge_gap_s=0.3)
    for k in order:
        image, score_map = _frame(k)
        rec.add(stamps[k], k, image, score_map, scores[k])
    asked: list[set[int]] = []

    def refetch(indices):
        asked.append(set(indices))
        for k in sorted(indices):
            yield (k, *_frame(k), scores[k])

    review = rec.finish(refetch)
    expected = merge_events(stamps, scores, [s >= 6.0 for s in scores], merge_gap_s=0.3)
    assert review["events"] == len(expected) > 1
    assert review["flagged"] == sum(s >= 6.0 for s in scores) and review["frames"] == 40
    assert review["stamps_in_order"] is not shuffle
    assert review["peak_frames_rescored"] == (len(expected) if shuffle else 0)
    assert review["peak_frames_missing"] == 0
    assert asked == ([{e.peak_index for e in expected}] if shuffle else [])
    files = sorted(p.name for p in (tmp_path / "events").iterdir())
    assert files == sorted(e.peak_frame for e in expected)
    with open(tmp_path / "events.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["peak_frame"] for r in table] == [e.peak_frame for e in expected]
    assert [int(r["frames"]) for r in table] == [e.frames for e in expected]
    assert (tmp_path / "timeline.png").stat().st_size > 0
    assert review["duration_s"] == pytest.approx(39 / 5)
    assert review["events_per_minute"] == pytest.approx(len(expected) / (39 / 5 / 60))


def test_recorder_keeps_at_most_one_peak_frame(tmp_path):
    """Memory: while streaming, only the open event's best frame is held, never a list of images."""
    rec = ReviewRecorder(tmp_path, pixel_threshold=None, image_threshold=0.5, merge_gap_s=10.0)
    for k in range(50):
        rec.add(T0 + k * S, k, *_frame(k), float(k))
        held = [v for v in vars(rec).values() if isinstance(v, np.ndarray)]
        assert held == [] and (rec._peak is None or rec._peak.index == k)
    review = rec.finish(None)
    assert review["events"] == 1 and review["pixel_threshold"] is None
    with open(tmp_path / "frames.csv") as handle:
        assert {r["anomalous_fraction"] for r in csv.DictReader(handle)} == {""}


def test_recorder_without_threshold_flags_nothing(tmp_path):
    rec = ReviewRecorder(tmp_path, pixel_threshold=None, image_threshold=None, merge_gap_s=1.0)
    for k in range(3):
        rec.add(T0 + k * S, k, *_frame(k), float(k))
    review = rec.finish(None)
    assert (review["flagged"], review["events"]) == (0, 0)
    assert not (tmp_path / "events").exists() or not any((tmp_path / "events").iterdir())


def test_a_second_review_into_the_same_folder_drops_the_old_event_frames(tmp_path):
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "1.000000000.png").write_bytes(b"old")
    ReviewRecorder(tmp_path, pixel_threshold=None, image_threshold=None, merge_gap_s=1.0)
    assert not (tmp_path / "events" / "1.000000000.png").exists()
