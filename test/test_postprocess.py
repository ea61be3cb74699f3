from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from flowclas_ros.runtime.postprocess import (
    Region,
    anomalous_fraction,
    anomaly_mask,
    find_regions,
    heat_weights,
    render_overlay,
)


def _two_blobs() -> np.ndarray:
    score = np.zeros((40, 60), np.float32)
    score[5:15, 10:30] = 0.8  # 200 px
    score[9, 20] = 0.95  # peak inside the big blob
    score[30:33, 50:53] = 0.6  # 9 px
    score[20, 5] = 0.5  # single pixel exactly at the threshold
    return score


def test_mask_is_0_255_and_at_threshold_counts():
    score = np.array([[0.2, 0.5], [0.7, np.nan]], np.float32)
    mask = anomaly_mask(score, 0.5)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[0, 255], [255, 0]])
    assert anomalous_fraction(score, 0.5) == pytest.approx(0.5)
    assert anomalous_fraction(np.zeros((0, 3), np.float32), 0.5) == 0.0


def test_regions_match_scipy_labels_and_are_sorted():
    score = _two_blobs()
    regions = find_regions(score, 0.5)
    assert [r.area for r in regions] == [200, 9, 1]
    big = regions[0]
    assert (big.x, big.y, big.width, big.height) == (10, 5, 20, 10)
    assert big.peak_score == pytest.approx(0.95)
    assert big.mean_score == pytest.approx((199 * 0.8 + 0.95) / 200, rel=1e-6)
    # Cross-check against scipy's labelling with 8-connectivity.
    labels, count = ndimage.label(score >= 0.5, structure=np.ones((3, 3)))
    assert count == 3
    peaks = sorted(ndimage.maximum(score, labels, range(1, count + 1)), reverse=True)
    assert sorted((r.peak_score for r in regions), reverse=True) == pytest.approx(peaks)
    assert regions[2] == Region(x=5, y=20, width=1, height=1, peak_score=0.5, mean_score=0.5, area=1)


def test_min_area_and_max_regions_filter():
    score = _two_blobs()
    assert [r.area for r in find_regions(score, 0.5, min_area=5)] == [200, 9]
    assert [r.area for r in find_regions(score, 0.5, max_regions=1)] == [200]
    assert find_regions(score, 2.0) == []
    assert find_regions(np.full((4, 4), np.nan, np.float32), 0.0) == []


def test_diagonal_pixels_are_one_region():
    score = np.zeros((5, 5), np.float32)
    score[1, 1] = score[2, 2] = score[3, 3] = 1.0
    (region,) = find_regions(score, 0.5)
    assert region.area == 3 and (region.width, region.height) == (3, 3)


def test_heat_weights_follow_scores():
    score = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)
    level, weight = heat_weights(score, alpha=0.6, score_range=(0.0, 1.0))
    np.testing.assert_array_equal(level, [[0, 128, 255, 0]])
    np.testing.assert_allclose(weight, [[0.0, 0.3, 0.6, 0.0]], atol=1e-6)
    level, weight = heat_weights(np.full((2, 2), 3.0, np.float32), alpha=0.5)
    assert not level.any() and not weight.any()  # a flat map shows no heat


def test_overlay_blends_only_where_scores_are_high():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    score = _two_blobs()
    out = render_overlay(rgb, score, 0.5, regions=None, alpha=0.5, score_range=(0.0, 1.0), label=False)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[score == 0], rgb[score == 0])  # zero weight: untouched
    assert np.abs(out[9, 20].astype(int) - rgb[9, 20]).max() > 0
    # alpha 0 returns the image itself.
    np.testing.assert_array_equal(render_overlay(rgb, score, 0.5, alpha=0.0, label=False), rgb)


def test_overlay_draws_boxes_and_label():
    rgb = np.full((120, 160, 3), 100, np.uint8)
    score = np.zeros((120, 160), np.float32)
    score[60:80, 80:120] = 1.0
    regions = find_regions(score, 0.5)
    plain = render_overlay(rgb, score, 0.5, regions=[], alpha=0.0, label=False)
    boxed = render_overlay(rgb, score, 0.5, regions=regions, alpha=0.0, label=False)
    labelled = render_overlay(rgb, score, 0.5, regions=regions, alpha=0.0, label=True)
    assert (boxed[60, 80:120] == 255).all()  # the white box edge
    assert (plain[60, 80:120] == 100).all()
    assert (labelled[:20] != boxed[:20]).any()  # image-score text in the top band


def test_overlay_rejects_bad_input():
    rgb = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        render_overlay(rgb, np.zeros((5, 4), np.float32), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        render_overlay(rgb, np.zeros((4, 4), np.float32), 0.5, alpha=1.5)
    with pytest.raises(ValueError, match="2-D float"):
        anomaly_mask(np.zeros((4, 4), np.uint8), 0.5)
