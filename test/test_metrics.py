"""Streaming metrics vs scikit-learn on random data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from flowclas_ros.evaluation.metrics import (
    IGNORE_LABEL,
    ImageMetrics,
    PixelMetrics,
    exact_auroc,
    image_label_from_mask,
)


def _fpr95_sklearn(y: np.ndarray, s: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.argmax(tpr >= 0.95)])


def _random_images(rng: np.random.Generator, n: int = 6, shape=(24, 30), quantize: int | None = None):
    """Images with overlapping normal/anomaly score distributions and some ignore pixels."""
    out = []
    for _ in range(n):
        labels = (rng.random(shape) < 0.2).astype(np.uint8)
        labels[rng.random(shape) < 0.1] = IGNORE_LABEL
        scores = np.clip(rng.normal(0.4 + 0.25 * (labels == 1), 0.15), 0.0, 1.0)
        if quantize:  # many exact ties, on values that fall exactly on separate bins
            scores = np.round(scores * quantize) / quantize
        out.append((scores.astype(np.float32), labels))
    return out


def _sklearn_reference(images):
    s = np.concatenate([x.ravel() for x, _ in images]).astype(np.float64)
    y = np.concatenate([m.ravel() for _, m in images])
    keep = y != IGNORE_LABEL
    return s[keep], y[keep]


@pytest.mark.parametrize("quantize", [None, 20])
def test_matches_sklearn(quantize):
    rng = np.random.default_rng(0)
    images = _random_images(rng, quantize=quantize)
    metrics = PixelMetrics()
    for scores, labels in images:
        metrics.update(scores, labels)
    s, y = _sklearn_reference(images)
    got = metrics.compute()
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-4)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-4)
    assert got["fpr95"] == pytest.approx(_fpr95_sklearn(y, s), abs=1e-3)
    assert got["n_pos"] == int((y == 1).sum()) and got["n_neg"] == int((y == 0).sum())
    assert got["n_ignored"] == sum(int((m == IGNORE_LABEL).sum()) for _, m in images)
    if not quantize:
        assert got["auroc_error_bound"] < 1e-3  # (with real ties the bound is loose by design)
    else:
        # Every distinct score has its own bin: binned metrics are exact, ties included.
        assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert got["fpr95"] == pytest.approx(_fpr95_sklearn(y, s), abs=1e-12)


@pytest.mark.parametrize("num_bins", [2**10, 2**18])
def test_batch_split_and_merge_do_not_change_result(num_bins):
    rng = np.random.default_rng(1)
    images = _random_images(rng, n=4)
    whole = PixelMetrics(num_bins=num_bins)  # with 2**10 bins: the full-histogram bincount path
    whole.update(np.stack([s for s, _ in images]), np.stack([m for _, m in images]))
    parts = [PixelMetrics(num_bins=num_bins), PixelMetrics(num_bins=num_bins)]  # small-batch path
    for i, (scores, labels) in enumerate(images):
        for half in np.array_split(np.arange(scores.size), 3):  # uneven pieces of each image
            parts[i % 2].update(scores.ravel()[half], labels.ravel()[half])
    parts[0].merge(parts[1])
    assert np.array_equal(parts[0].state, whole.state)
    assert parts[0].compute() == whole.compute()


def test_state_size_is_independent_of_number_of_updates():
    rng = np.random.default_rng(2)
    metrics = PixelMetrics(num_bins=2**12)
    size = metrics.state.nbytes
    for _ in range(200):
        scores, labels = _random_images(rng, n=1, shape=(8, 8))[0]
        metrics.update(scores, labels)
    assert metrics.state.nbytes == size == (2 * 2**12 + 3) * 8
    assert metrics.compute()["n_pos"] + metrics.compute()["n_neg"] + metrics.n_ignored == 200 * 64


def test_unbounded_scores_with_adaptive_range():
    rng = np.random.default_rng(3)
    y = (rng.random(20000) < 0.3).astype(np.uint8)
    nll = rng.normal(5.0 + 3.0 * y, 2.0) * 40.0  # NLL-like, far outside [0, 1]
    metrics = PixelMetrics(score_range=None)
    metrics.update(nll[:5000], y[:5000])  # first batch fixes the range with a margin
    metrics.update(nll[5000:], y[5000:])
    got = metrics.compute()
    assert got["auroc"] == pytest.approx(roc_auc_score(y, nll), abs=1e-3)
    assert got["ap"] == pytest.approx(average_precision_score(y, nll), abs=1e-3)
    assert got["fpr95"] == pytest.approx(_fpr95_sklearn(y, nll), abs=1e-3)


def test_clipped_scores_are_counted_and_bounded():
    rng = np.random.default_rng(4)
    y = (rng.random(5000) < 0.5).astype(np.uint8)
    s = rng.normal(0.5 + 0.3 * y, 0.3)  # partly outside [0, 1]
    metrics = PixelMetrics(score_range=(0.0, 1.0))
    metrics.update(s, y)
    got = metrics.compute()
    assert got["n_clipped"] == int(((s < 0) | (s > 1)).sum()) > 0
    # The reported bound must contain the true error.
    assert abs(got["auroc"] - roc_auc_score(y, s)) <= got["auroc_error_bound"] + 1e-12
    assert 0 <= got["fpr95"] - _fpr95_sklearn(y, s) <= got["fpr95_error_bound"] + 1e-12


def test_threshold_at_fpr_and_at_threshold():
    rng = np.random.default_rng(5)
    y = (rng.random(100_000) < 0.2).astype(np.uint8)  # one big update: the full-histogram path
    s = np.clip(rng.normal(0.3 + 0.4 * y, 0.1), 0, 1).astype(np.float32)
    metrics = PixelMetrics()
    metrics.update(s, y)
    assert metrics.compute()["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-4)
    assert metrics.compute()["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-4)
    t = metrics.threshold_at_fpr(0.05)
    fpr = float(((s >= t) & (y == 0)).sum() / (y == 0).sum())
    assert fpr <= 0.05
    assert fpr > 0.05 - 0.001  # lowest such threshold, to one bin
    at = metrics.at_threshold(t)
    tp = ((s >= t) & (y == 1)).sum()
    fp = ((s >= t) & (y == 0)).sum()
    fn = ((s < t) & (y == 1)).sum()
    assert at["fpr"] == pytest.approx(fpr, abs=1e-12)
    assert at["precision"] == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert at["recall"] == pytest.approx(tp / (tp + fn), abs=1e-12)
    assert at["iou"] == pytest.approx(tp / (tp + fp + fn), abs=1e-12)


def test_curves_are_downsampled_and_monotone():
    rng = np.random.default_rng(6)
    y = (rng.random(30000) < 0.3).astype(np.uint8)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    metrics = PixelMetrics()
    metrics.update(s, y)
    curves = metrics.curves(max_points=100)
    roc, pr = curves["roc"], curves["pr"]
    assert len(roc["fpr"]) <= 102 and len(pr["recall"]) <= 101
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert roc["fpr"][-1] == roc["tpr"][-1] == pr["recall"][-1] == 1.0
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc_auc_score(y, s), abs=5e-3)


def test_bad_inputs_raise_clear_errors():
    metrics = PixelMetrics()
    with pytest.raises(ValueError, match=r"found \[2, 7\]"):
        metrics.update(np.zeros(3), np.array([0, 2, 7]))
    with pytest.raises(ValueError, match="shape"):
        metrics.update(np.zeros(3), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        metrics.update(np.array([0.1, np.nan]), np.array([0, 1]))
    metrics.update(np.array([np.nan, 0.2]), np.array([IGNORE_LABEL, 0]))  # NaN on ignored pixel is fine
    assert metrics.compute()["auroc"] is None  # no anomalous pixels
    with pytest.raises(ValueError, match="ranges"):
        metrics.merge(PixelMetrics(score_range=(0.0, 2.0)))
    with pytest.raises(ValueError, match="normal"):
        PixelMetrics().threshold_at_fpr(0.05)


def test_image_metrics_exact():
    rng = np.random.default_rng(7)
    scores = np.round(rng.random(60), 1)  # ties
    labels = rng.random(60) < 0.4
    metrics = ImageMetrics()
    metrics.update(scores[:30], labels[:30])
    other = ImageMetrics()
    for s, y in zip(scores[30:], labels[30:]):
        mask = np.zeros((4, 4), np.uint8)
        mask[0, 0] = IGNORE_LABEL
        if y:
            mask[2, 2] = 1
        other.add(float(s), mask=mask)
    metrics.merge(other)
    other.add(0.5, mask=np.full((2, 2), IGNORE_LABEL, np.uint8))  # fully ignored image: skipped
    got = metrics.compute()
    assert got["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert got["n_images"] == 60 and got["n_anomalous_images"] == int(labels.sum())
    assert image_label_from_mask(np.array([[0, 255]], np.uint8)) is False
    assert exact_auroc(np.ones(3), np.zeros(3)) is None
