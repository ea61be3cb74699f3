"""3D stage without ROS: back-projection, depth validity, voxel grid, region boxes, stamp sync."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from flowclas_ros.data.images.codec import decode_float
from flowclas_ros.runtime.depth_camera import PinholeIntrinsics, depth_to_metres, match_depth_size
from flowclas_ros.runtime.geometry3d import (
    POINT_DTYPE,
    DepthSettings,
    anomalies_3d,
    backproject,
    region_labels,
    regions_3d,
    voxel_downsample,
)
from flowclas_ros.runtime.postprocess import anomaly_mask, find_regions
from flowclas_ros.runtime.stamp_sync import StampBuffer, stamp_to_ns

W, H = 160, 120
K = PinholeIntrinsics(fx=200.0, fy=180.0, cx=79.5, cy=59.5, width=W, height=H)
THRESHOLD = 1.0
# The anomaly: a 0.2 m x 0.1 m rectangle facing the camera at z = 1 m, centred at (0.05, -0.02).
PATCH_Z, PATCH_X, PATCH_Y = 1.0, (-0.05, 0.15), (-0.07, 0.03)
PLANE_Z = 2.0
# A second anomalous area lies on the background plane (z = 2 m): pixel rows/cols.
PLANE_ROWS, PLANE_COLS = slice(95, 110), slice(10, 40)


def pixel_rays() -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates (x/z, y/z) of every pixel centre."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return (u - K.cx) / K.fx, (v - K.cy) / K.fy


def render_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth in millimetres (uint16, as a 16UC1 camera sends it), scores, and the patch's pixel mask.

    The depth comes from intersecting each pixel's ray with the scene (a plane at 2 m with the
    rectangle at 1 m in front of it), independent of the back-projection code under test.
    """
    rx, ry = pixel_rays()
    on_patch = (
        (rx * PATCH_Z >= PATCH_X[0])
        & (rx * PATCH_Z <= PATCH_X[1])
        & (ry * PATCH_Z >= PATCH_Y[0])
        & (ry * PATCH_Z <= PATCH_Y[1])
    )
    depth_mm = np.where(on_patch, PATCH_Z * 1000, PLANE_Z * 1000).astype(np.uint16)
    scores = np.zeros((H, W), np.float32)
    scores[on_patch] = 3.0 + rx[on_patch].astype(np.float32)  # varies, so the peak is known
    scores[PLANE_ROWS, PLANE_COLS] = 2.0
    return depth_mm, scores, on_patch


def decoded_depth_m(depth_mm: np.ndarray) -> np.ndarray:
    """Through the real message path: 16UC1 bytes -> decode_float -> REP-118 metres."""
    raw = decode_float("16UC1", H, W, W * 2, depth_mm.astype("<u2").tobytes(), 0)
    return depth_to_metres(raw, "16UC1")


def as_xyz(points: np.ndarray) -> np.ndarray:
    return np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float64)


def test_backprojected_points_lie_on_the_known_geometry_within_1cm() -> None:
    depth_mm, scores, on_patch = render_scene()
    mask = anomaly_mask(scores, THRESHOLD)
    points, pixels = backproject(scores, mask, decoded_depth_m(depth_mm), K)
    assert points.dtype == POINT_DTYPE
    assert points.size == np.count_nonzero(mask)
    xyz = as_xyz(points)
    patch_points = on_patch.reshape(-1)[pixels]
    # Patch points: on the z = 1 m plane, inside the rectangle (1 cm slack).
    p = xyz[patch_points]
    assert p.shape[0] == np.count_nonzero(on_patch) > 100
    np.testing.assert_allclose(p[:, 2], PATCH_Z, atol=1e-6)
    assert p[:, 0].min() >= PATCH_X[0] - 0.01 and p[:, 0].max() <= PATCH_X[1] + 0.01
    assert p[:, 1].min() >= PATCH_Y[0] - 0.01 and p[:, 1].max() <= PATCH_Y[1] + 0.01
    # And they span the rectangle (to within a pixel footprint, 5 mm at 1 m).
    assert p[:, 0].min() <= PATCH_X[0] + 0.01 and p[:, 0].max() >= PATCH_X[1] - 0.01
    # Every point: its pixel's ray, scaled to the scene depth, agrees within 1 cm.
    rx, ry = pixel_rays()
    z_true = np.where(on_patch, PATCH_Z, PLANE_Z).reshape(-1)[pixels]
    expected = np.stack([rx.reshape(-1)[pixels] * z_true, ry.reshape(-1)[pixels] * z_true, z_true], axis=1)
    assert np.abs(xyz - expected).max() < 0.01
    # Scores are carried per point.
    np.testing.assert_array_equal(points["score"], scores.reshape(-1)[pixels])


def test_anomalies_3d_region_boxes_match_the_scene() -> None:
    depth_mm, scores, on_patch = render_scene()
    mask = anomaly_mask(scores, THRESHOLD)
    regions = find_regions(scores, THRESHOLD, 1, mask=mask)
    assert len(regions) == 2
    result = anomalies_3d(scores, mask, regions, decoded_depth_m(depth_mm), K, DepthSettings())
    assert result.valid_pixels == result.points.size == np.count_nonzero(mask)
    by_z = sorted(result.regions, key=lambda r: r.centroid[2])
    patch, plane = by_z
    # The patch: box = the rectangle (within a pixel footprint), centroid at its middle, flat in z.
    np.testing.assert_allclose(patch.box_center, (0.05, -0.02, PATCH_Z), atol=0.01)
    np.testing.assert_allclose(patch.extent, (0.20, 0.10, 0.0), atol=0.01)
    np.testing.assert_allclose(patch.centroid, (0.05, -0.02, PATCH_Z), atol=0.01)
    assert patch.num_points == np.count_nonzero(on_patch)
    assert patch.peak_score == pytest.approx(float(scores[on_patch].max()))
    # The area on the 2 m plane: its pixel box projected to 2 m.
    rx, ry = pixel_rays()
    x_lo, x_hi = rx[0, PLANE_COLS.start] * PLANE_Z, rx[0, PLANE_COLS.stop - 1] * PLANE_Z
    y_lo, y_hi = ry[PLANE_ROWS.start, 0] * PLANE_Z, ry[PLANE_ROWS.stop - 1, 0] * PLANE_Z
    np.testing.assert_allclose(plane.box_min, (x_lo, y_lo, PLANE_Z), atol=0.01)
    np.testing.assert_allclose(plane.box_max, (x_hi, y_hi, PLANE_Z), atol=0.01)
    assert plane.num_points == 15 * 30
    assert plane.peak_score == pytest.approx(2.0)


def test_invalid_depth_is_excluded() -> None:
    _, scores, on_patch = render_scene()
    depth = np.where(on_patch, PATCH_Z, PLANE_Z).astype(np.float32)  # 32FC1 metres
    rows, cols = np.nonzero(on_patch)
    bad = {
        "zero": (rows[0], cols[0], 0.0),
        "nan": (rows[1], cols[1], np.nan),
        "inf": (rows[2], cols[2], np.inf),
        "-inf": (rows[3], cols[3], -np.inf),
        "beyond max": (rows[4], cols[4], 4.5),
        "below min": (rows[5], cols[5], 0.1),
        "negative": (rows[6], cols[6], -1.0),
    }
    for r, c, value in bad.values():
        depth[r, c] = value
    mask = anomaly_mask(scores, THRESHOLD)
    settings = DepthSettings(min_range=0.2, max_range=4.0)
    points, pixels = backproject(
        scores, mask, depth, K, min_range=settings.min_range, max_range=settings.max_range
    )
    bad_pixels = {int(r) * W + int(c) for r, c, _ in bad.values()}
    assert not bad_pixels & set(pixels.tolist())
    assert points.size == np.count_nonzero(mask) - len(bad)
    assert np.isfinite(as_xyz(points)).all()
    assert points["z"].min() >= 0.2 and points["z"].max() <= 4.0
    # The max-range edge itself is valid (inclusive), just beyond it is not.
    depth2 = np.full((H, W), 4.0, np.float32)
    depth2[0, 0] = np.nextafter(np.float32(4.0), np.float32(5.0))
    full = np.ones((H, W), bool)
    pts, pix = backproject(scores, full, depth2, K, max_range=4.0)
    assert pts.size == H * W - 1 and 0 not in pix


def test_region_without_valid_depth_has_no_3d() -> None:
    _, scores, on_patch = render_scene()
    depth = np.where(on_patch, 0.0, PLANE_Z).astype(np.float32)  # the patch has no depth return
    mask = anomaly_mask(scores, THRESHOLD)
    regions = find_regions(scores, THRESHOLD, 1, mask=mask)
    result = anomalies_3d(scores, mask, regions, depth, K, DepthSettings())
    patch_index = next(i for i, r in enumerate(regions) if r.area == np.count_nonzero(on_patch))
    assert result.regions[patch_index] is None
    assert result.regions[1 - patch_index] is not None
    assert result.valid_pixels == 15 * 30


def test_box_quantile_ignores_stray_background_pixels() -> None:
    _, scores, on_patch = render_scene()
    depth = np.where(on_patch, PATCH_Z, PLANE_Z).astype(np.float32)
    # The region bleeds one pixel column past the patch edge, onto the 2 m background.
    rows, cols = np.nonzero(on_patch)
    edge = (slice(rows.min(), rows.max() + 1), cols.max() + 1)
    scores[edge] = 3.0
    mask = anomaly_mask(scores, THRESHOLD)
    regions = find_regions(scores, THRESHOLD, 1, mask=mask)
    exact = anomalies_3d(scores, mask, regions, depth, K, DepthSettings())
    trimmed = anomalies_3d(scores, mask, regions, depth, K, DepthSettings(box_quantile=0.05))
    big = max(range(len(regions)), key=lambda i: regions[i].area)
    assert exact.regions[big].extent[2] == pytest.approx(PLANE_Z - PATCH_Z)
    assert trimmed.regions[big].extent[2] == pytest.approx(0.0, abs=1e-6)


def brute_force_voxels(points: np.ndarray, voxel: float) -> dict[tuple[int, int, int], tuple]:
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, p in enumerate(as_xyz(points)):
        groups.setdefault(tuple(int(math.floor(v / voxel)) for v in p), []).append(i)
    return {
        key: (as_xyz(points[idx]).mean(axis=0), float(points["score"][idx].max()))
        for key, idx in groups.items()
    }


def test_voxel_downsampling_bounds_the_count_and_keeps_points_in_their_voxel() -> None:
    rng = np.random.default_rng(0)
    points = np.empty(5000, POINT_DTYPE)
    points["x"] = rng.uniform(-0.5, 0.5, points.size)
    points["y"] = rng.uniform(-0.25, 0.25, points.size)
    points["z"] = rng.uniform(1.0, 1.5, points.size)
    points["score"] = rng.uniform(0, 10, points.size)
    voxel = 0.1
    out = voxel_downsample(points, voxel)
    assert out.dtype == POINT_DTYPE
    # At most one point per voxel of the 1 x 0.5 x 0.5 m volume (11 x 6 x 6 voxel cells at most).
    assert out.size <= 11 * 6 * 6 < points.size
    expected = brute_force_voxels(points, voxel)
    assert out.size == len(expected)
    for p, score in zip(as_xyz(out), out["score"]):
        # The output point lies in (float32 rounding: at the edge of) an occupied voxel ...
        key = tuple(int(math.floor(v / voxel + 1e-6)) for v in p)
        if key not in expected:
            key = tuple(int(math.floor(v / voxel - 1e-6)) for v in p)
        mean, peak = expected[key]
        # ... at the mean of its points, with their highest score.
        np.testing.assert_allclose(p, mean, atol=1e-6)
        assert score == pytest.approx(peak)
    assert voxel_downsample(points, 0.0) is points
    assert voxel_downsample(points[:0], voxel).size == 0


def test_voxel_downsampling_of_a_huge_extent_does_not_overflow() -> None:
    points = np.zeros(3, POINT_DTYPE)
    points["x"] = [-1e6, 0.0, 1e6]
    points["y"] = [-1e6, 1e6, 0.0]
    points["z"] = [0.0, 1e6, 1e6]
    points["score"] = [1, 2, 3]
    out = voxel_downsample(points, 1e-6)  # 2e12 cells per axis: the packed key would overflow
    assert out.size == 3
    assert sorted(out["score"].tolist()) == [1, 2, 3]


def test_half_resolution_depth_is_resized_nearest() -> None:
    depth_mm, scores, on_patch = render_scene()
    full = decoded_depth_m(depth_mm)
    half = full[::2, ::2].copy()  # a depth camera at half the colour resolution
    up = match_depth_size(half, H, W)
    assert up.shape == (H, W)
    np.testing.assert_array_equal(up[::2, ::2], half)  # nearest: values copied, none invented
    assert set(np.unique(up).tolist()) <= {PATCH_Z, PLANE_Z}
    # Points at the patch's depth lie on it (slack: one half-resolution pixel, 1 cm at 1 m); the
    # patch's edge pixels take the background's depth from their neighbour, never a blend.
    mask = anomaly_mask(scores, THRESHOLD) & on_patch
    points, _ = backproject(scores, mask, up, K)
    on_depth = points[points["z"] == np.float32(PATCH_Z)]
    assert on_depth.size > 0.85 * np.count_nonzero(on_patch)
    assert set(np.unique(points["z"]).tolist()) == {PATCH_Z, PLANE_Z}
    assert on_depth["x"].min() >= PATCH_X[0] - 0.011 and on_depth["x"].max() <= PATCH_X[1] + 0.011
    assert on_depth["y"].min() >= PATCH_Y[0] - 0.011 and on_depth["y"].max() <= PATCH_Y[1] + 0.011
    with pytest.raises(ValueError, match="aspect ratio"):
        match_depth_size(np.ones((H, W // 2), np.float32), H, W)


def test_intrinsics_from_camera_info_and_scaling() -> None:
    k = [500.0, 0, 320.0, 0, 505.0, 240.0, 0, 0, 1]
    p = [480.0, 0, 318.0, 0, 0, 482.0, 236.0, 0, 0, 0, 1, 0]
    from_p = PinholeIntrinsics.from_camera_info(k, p, 640, 480)
    assert (from_p.fx, from_p.fy, from_p.cx, from_p.cy) == (480.0, 482.0, 318.0, 236.0)
    from_k = PinholeIntrinsics.from_camera_info(k, [0.0] * 12, 640, 480)
    assert (from_k.fx, from_k.fy, from_k.cx, from_k.cy) == (500.0, 505.0, 320.0, 240.0)
    with pytest.raises(ValueError, match="calibrated"):
        PinholeIntrinsics.from_camera_info([0.0] * 9, None, 640, 480)
    with pytest.raises(ValueError, match="9 values"):
        PinholeIntrinsics.from_camera_info([1.0] * 4, None, 640, 480)
    # Scaling: a 3D point projects onto the same spot of the resized image (pixel-area convention).
    half = from_k.scaled_to(320, 240)
    x, y, z = 0.3, -0.2, 1.7
    u, v = from_k.fx * x / z + from_k.cx, from_k.fy * y / z + from_k.cy
    u2, v2 = half.fx * x / z + half.cx, half.fy * y / z + half.cy
    assert u2 == pytest.approx((u + 0.5) / 2 - 0.5) and v2 == pytest.approx((v + 0.5) / 2 - 0.5)
    assert from_k.scaled_to(640, 480) is from_k


def test_depth_units_follow_rep118_unless_overridden() -> None:
    raw = np.array([[1000.0, 0.0]], np.float32)
    np.testing.assert_allclose(depth_to_metres(raw, "16UC1"), [[1.0, 0.0]])
    np.testing.assert_allclose(depth_to_metres(raw, "32FC1"), raw)
    np.testing.assert_allclose(depth_to_metres(raw, "16UC1", depth_scale=0.0001), [[0.1, 0.0]])
    with pytest.raises(ValueError, match="depth_scale"):
        depth_to_metres(raw, "8UC1")


def test_depth_settings_are_validated() -> None:
    for bad in (
        {"min_range": 2.0, "max_range": 1.0},
        {"min_range": -1.0},
        {"voxel_size": -0.1},
        {"depth_scale": math.nan},
        {"box_quantile": 0.5},
    ):
        with pytest.raises(ValueError):
            DepthSettings(**bad)


def test_region_labels_rejects_regions_of_another_mask() -> None:
    _, scores, _ = render_scene()
    mask = anomaly_mask(scores, THRESHOLD)
    regions = find_regions(scores, THRESHOLD, 1, mask=mask)
    labels, ids = region_labels(mask, regions)
    assert sorted(ids) == [1, 2] and labels.max() == 2
    with pytest.raises(ValueError, match="connected component"):
        region_labels(np.zeros_like(mask), regions)
    assert regions_3d(np.zeros(0, POINT_DTYPE), np.zeros(0, np.int64), labels, ids) == [None, None]


def test_stamp_buffer_picks_the_nearest_within_tolerance() -> None:
    buffer: StampBuffer[str] = StampBuffer(capacity=4)
    assert buffer.nearest(0, 10**9) is None and buffer.latest() is None
    ms = 1_000_000
    for t, name in [(100, "a"), (133, "b"), (166, "c")]:
        buffer.push(t * ms, name)
    assert buffer.nearest(130 * ms, 5 * ms) == "b"
    assert buffer.nearest(150 * ms, 20 * ms) == "c"  # 16 ms to c, 17 ms to b
    assert buffer.nearest(116 * ms, 17 * ms) == "a"  # 16 ms to a, 17 ms to b
    assert buffer.nearest(117 * ms, 16 * ms) == "b"  # 16 ms to b, 17 ms to a (out of tolerance)
    assert buffer.nearest(200 * ms, 10 * ms) is None  # nothing close enough
    assert buffer.nearest(166 * ms, 0) == "c"  # exact match with zero tolerance
    assert buffer.nearest(166 * ms, -1) is None
    buffer.push(116 * ms + 500_000, "late")  # out of order
    assert buffer.nearest(116 * ms, 10 * ms) == "late"
    # Bounded: the oldest falls out.
    buffer.push(199 * ms, "d")
    assert len(buffer) == 4 and buffer.nearest(100 * ms, 10 * ms) is None
    assert buffer.latest() == (199 * ms, "d")
    buffer.clear()
    assert len(buffer) == 0
    assert stamp_to_ns(3, 5) == 3_000_000_005
    with pytest.raises(ValueError):
        StampBuffer(capacity=0)


def test_stamp_buffer_ties_go_to_the_earlier_entry_and_it_is_thread_safe() -> None:
    buffer: StampBuffer[int] = StampBuffer(capacity=8)
    buffer.push(90, 1)
    buffer.push(110, 2)
    assert buffer.nearest(100, 10) == 1

    def writer(start: int) -> None:
        for i in range(2000):
            buffer.push(start + i, i)

    threads = [threading.Thread(target=writer, args=(k * 10_000,)) for k in range(3)]
    for t in threads:
        t.start()
    for _ in range(2000):
        buffer.nearest(5_000, 10**9)
    for t in threads:
        t.join()
    assert len(buffer) == 8
