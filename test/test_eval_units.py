"""Evaluation building blocks without a model: accumulator, example keeper, replay tracker, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from flowclas_ros.evaluation.accumulator import EvalAccumulator, frame_auroc, percentiles
from flowclas_ros.evaluation.examples import ExampleKeeper, make_example
from flowclas_ros.evaluation.frames import EvalFrame
from flowclas_ros.evaluation.replay_tracker import ReplayTracker
from flowclas_ros.evaluation.report import CONTRACT_KEYS, build_metrics, write_metrics, write_report


def _frames(n: int, seed: int = 0, shape=(20, 24)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mask = (rng.random(shape) < 0.1).astype(np.uint8)
        mask[rng.random(shape) < 0.05] = 255
        scores = (rng.normal(0, 1, shape) + 1.5 * (mask == 1)).astype(np.float32)
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        out.append((f"f{i}", image, mask, scores))
    return out


def test_accumulator_matches_sklearn_and_is_order_deterministic():
    frames = _frames(12)
    acc = EvalAccumulator(score_kind="nll", range_warmup=3)
    for name, image, mask, scores in frames:
        acc.add(name, image, mask, scores, float(scores.max()), latency_ms=1.0)
    res = acc.pixel_results()
    valid = np.concatenate([(m != 255).ravel() for _, _, m, _ in frames])
    s = np.concatenate([sc.ravel() for *_, sc in frames])[valid]
    y = np.concatenate([m.ravel() for _, _, m, _ in frames])[valid]
    assert res["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-4)
    assert res["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-3)
    assert res["n_ignored"] == int((~valid).sum())
    # Scores beyond the warm-up range are clipped into the end bins, and counted.
    assert res["n_clipped"] >= 0 and acc.counts.n_frames == 12 and acc.counts.n_with_mask == 12
    again = EvalAccumulator(score_kind="nll", range_warmup=3)
    for name, image, mask, scores in frames:
        again.add(name, image, mask, scores, float(scores.max()))
    assert again.pixel_results() == res


def test_likelihood_range_is_capped_at_one_and_unpaired_frames_are_counted():
    acc = EvalAccumulator(score_kind="likelihood", range_warmup=2)
    rng = np.random.default_rng(1)
    mask = np.zeros((8, 8), np.uint8)
    mask[:2] = 1
    for i in range(3):
        acc.add(
            f"f{i}",
            np.zeros((8, 8, 3), np.uint8),
            mask,
            rng.uniform(0.2, 0.9, (8, 8)).astype(np.float32),
            0.5,
        )
    acc.add("nomask", np.zeros((8, 8, 3), np.uint8), None, np.zeros((8, 8), np.float32), 0.1)
    assert acc.pixel is not None and acc.pixel.range[1] == 1.0
    assert (acc.counts.n_unpaired, acc.counts.n_with_mask, acc.counts.n_frames) == (1, 3, 4)
    with pytest.raises(ValueError, match="mask shape"):
        acc.add(
            "bad", np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((8, 8), np.float32), 0
        )


def test_frame_auroc_ignores_255_and_needs_both_classes():
    mask = np.array([[0, 1, 255, 0]], np.uint8)
    assert frame_auroc(np.array([[0.1, 0.9, -5.0, 0.2]], np.float32), mask) == 1.0
    assert frame_auroc(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8)) is None


def test_percentiles():
    p = percentiles(list(range(101)))
    assert (p["p50"], p["p90"], p["p99"], p["max"]) == (50.0, 90.0, 99.0, 100.0)
    assert percentiles([])["p50"] is None


def test_example_keeper_keeps_k_lowest_and_highest_and_builds_lazily():
    keeper = ExampleKeeper(2)
    built = []

    def build(key):
        built.append(key)
        return make_example(
            f"k{key}", key, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), None, key
        )

    for key in [5, 1, 9, 3, 7, 1, 10, 0]:
        keeper.offer(key, lambda k=key: build(k))
    assert [e.key for e in keeper.lowest()] == [0, 1]
    assert [e.name for e in keeper.lowest()] == ["k0", "k1"]
    assert [e.key for e in keeper.highest()] == [10, 9]
    n_built = len(built)
    keeper.offer(4, lambda: build(4))  # makes neither list: its thumbnail is never built
    assert len(built) == n_built and 4 not in [e.key for e in keeper.lowest() + keeper.highest()]


def test_make_example_downscales_large_frames():
    ex = make_example(
        "x",
        0.5,
        np.zeros((640, 960, 3), np.uint8),
        np.ones((640, 960), np.float32),
        np.ones((640, 960), np.uint8),
        1,
    )
    assert ex.image.shape == (213, 320, 3) and ex.score_map.shape == ex.mask.shape == (213, 320)


def _frame(stamp: int) -> EvalFrame:
    return EvalFrame(f"s{stamp}", np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), stamp, stamp)


def test_replay_tracker_newest_frame_policy_counts_drops():
    t = ReplayTracker()
    for stamp in range(1, 6):
        assert t.published(_frame(stamp), float(stamp))
    assert not t.published(_frame(3), 3.5)  # duplicate stamp: cannot be matched
    sm = np.zeros((2, 2), np.float32)
    assert t.on_result(1, 1.25, 0.3, 0.5, 10.0) == []  # score map not yet there
    done = t.on_score_map(1, 1.3, sm)
    assert (
        len(done) == 1 and done[0].end_to_end_ms == pytest.approx(250.0) and done[0].node_latency_ms == 10.0
    )
    # The node skipped frames 2 and 3 (newest-frame policy) and answered 4.
    t.on_score_map(4, 4.6, sm)
    done = t.on_result(4, 4.5, 0.9, 0.5, 11.0)
    assert [d.frame.stamp_ns for d in done] == [4] and t.n_dropped == 2
    assert t.on_result(99, 5.0, 0.0) == [] and t.n_unmatched == 1
    t.on_result(5, 5.5, 0.1, 0.5)  # answered, but its score map never comes
    t.finish()
    counts = t.as_dict()
    assert counts == {
        "n_published": 5,
        "n_answered": 3,
        "n_dropped": 2,
        "n_score_map_missing": 1,
        "n_duplicate_stamps": 1,
        "n_unmatched_messages": 1,
    }
    assert t.threshold == 0.5


def test_replay_tracker_bounds_pending_frames():
    t = ReplayTracker(max_pending=3)
    for stamp in range(10):
        t.published(_frame(stamp), 0.0)
    assert t.n_pending == 3 and t.n_dropped == 7


def test_report_without_masks_has_null_metrics_and_contract_keys(tmp_path):
    acc = EvalAccumulator(n_examples=2)
    rng = np.random.default_rng(0)
    for i in range(3):
        acc.add(
            f"f{i}",
            rng.integers(0, 255, (30, 40, 3), dtype=np.uint8),
            None,
            rng.random((30, 40)).astype(np.float32),
            i,
            2.0,
        )
    metrics = build_metrics(
        acc,
        source={"kind": "folder", "path": "x"},
        checkpoint="c",
        backend="torch",
        device="cpu",
        threshold=None,
        threshold_source="checkpoint",
        latency_kind="predict",
    )
    write_metrics(metrics, tmp_path)
    write_report(acc, metrics, tmp_path)
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert set(CONTRACT_KEYS) <= set(loaded)
    assert loaded["auroc"] is None and loaded["image_auroc"] is None and loaded["n_images"] == 3
    assert loaded["latency_ms"] == {"p50": 2.0, "p90": 2.0, "p99": 2.0}
    report = (tmp_path / "report.md").read_text()
    assert "ranked by image score" in report.lower() and (tmp_path / "worst_frames.png").is_file()
    assert not (tmp_path / "roc.png").exists()
