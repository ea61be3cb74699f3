"""Anomalous pixels + aligned depth + pinhole intrinsics -> 3D points and per-region boxes (no ROS).

Inputs and conventions (documented choices):

* **Aligned, rectified depth.** The depth image must be registered to the
  colour image (same optical centre and pixel grid, e.g. RealSense
  ``aligned_depth_to_color``, OAK ``stereo/depth`` aligned to RGB) and both
  must be rectified (undistorted). Points come out in the colour camera's
  optical frame (REP-103: x right, y down, z forward), i.e. the colour
  image's ``header.frame_id``.
* **Intrinsics, depth units, resolution**: see :mod:`flowclas_ros.runtime.depth_camera`.
* **Pixel convention.** Integer pixel ``(u, v)`` is the pixel centre, as in
  OpenCV and ``image_geometry``: ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``.
* **Voxel grid.** :func:`voxel_downsample` keeps one point per occupied voxel
  (cubes of ``voxel_size`` aligned to the frame's origin): the *mean* position
  of its points (which stays inside the voxel) and the *maximum* score (a
  voxel is as anomalous as its worst point, the safe choice for a planner).
* **Regions.** A region's 3D box and centroid come from the full-resolution
  points (before voxel downsampling) of its pixels with valid depth. The
  cloud holds every anomalous pixel with valid depth, including regions below
  ``min_region_area`` that have no :class:`Region` of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from flowclas_ros.runtime.depth_camera import PinholeIntrinsics, match_depth_size
from flowclas_ros.runtime.postprocess import Region

POINT_DTYPE = np.dtype(
    {"names": ["x", "y", "z", "score"], "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 12], "itemsize": 16}
)
"""One cloud point: x, y, z in metres (camera optical frame) and the anomaly score, little-endian float32."""


@dataclass(frozen=True)
class DepthSettings:
    """How depth is read and the cloud is built (the node's parameters).

    Attributes:
        depth_scale: Metres per raw depth unit; 0 uses REP-118 (16UC1: 0.001, 32FC1: 1).
        min_range: Depth (z, metres) below which a pixel is invalid.
        max_range: Depth (z, metres) above which a pixel is invalid.
        voxel_size: Voxel edge in metres for downsampling the cloud; 0 keeps every point.
        box_quantile: Trim this fraction of points per axis at each end of a region's box
            (0 = exact min-max box; e.g. 0.02 ignores stray edge pixels that hit the background).
    """

    depth_scale: float = 0.0
    min_range: float = 0.0
    max_range: float = math.inf
    voxel_size: float = 0.0
    box_quantile: float = 0.0

    def __post_init__(self) -> None:
        if not (self.depth_scale >= 0 and math.isfinite(self.depth_scale)):
            raise ValueError(f"depth_scale must be a finite value >= 0 (0 = REP-118), got {self.depth_scale}")
        if not (0 <= self.min_range < self.max_range) or math.isnan(self.max_range):
            raise ValueError(
                f"need 0 <= min_range < max_range, got min_range={self.min_range}, max_range={self.max_range}"
            )
        if not (self.voxel_size >= 0 and math.isfinite(self.voxel_size)):
            raise ValueError(f"voxel_size must be a finite value >= 0 (0 = off), got {self.voxel_size}")
        if not 0 <= self.box_quantile < 0.5:
            raise ValueError(f"box_quantile must be in [0, 0.5), got {self.box_quantile}")


@dataclass(frozen=True)
class Region3D:
    """The 3D extent of one anomalous region's pixels that have valid depth.

    Attributes:
        centroid: Mean (x, y, z) of the points, metres, camera optical frame.
        box_min: Smallest (x, y, z) of the (optionally trimmed) axis-aligned box.
        box_max: Largest (x, y, z) of the box.
        num_points: Points (pixels with valid depth) the statistics are over.
        peak_score: Highest score among those points.
    """

    centroid: tuple[float, float, float]
    box_min: tuple[float, float, float]
    box_max: tuple[float, float, float]
    num_points: int
    peak_score: float

    @property
    def box_center(self) -> tuple[float, float, float]:
        """Centre of the axis-aligned box."""
        return tuple((lo + hi) / 2.0 for lo, hi in zip(self.box_min, self.box_max))  # type: ignore[return-value]

    @property
    def extent(self) -> tuple[float, float, float]:
        """Box size along x, y, z in metres (0 along an axis where all points agree)."""
        return tuple(hi - lo for lo, hi in zip(self.box_min, self.box_max))  # type: ignore[return-value]


@dataclass(frozen=True)
class Anomalies3D:
    """The 3D outputs of one frame.

    Attributes:
        points: The cloud, :data:`POINT_DTYPE`, voxel-downsampled when ``voxel_size`` > 0.
        regions: One entry per input :class:`Region`, in the same order; None where the
            region has no pixel with valid depth.
        valid_pixels: Anomalous pixels with valid depth (the cloud's size before downsampling).
    """

    points: np.ndarray
    regions: list[Region3D | None]
    valid_pixels: int


def _as_columns(points: np.ndarray) -> np.ndarray:
    """A (N, 4) float32 view (x, y, z, score) of a contiguous :data:`POINT_DTYPE` array."""
    return np.ascontiguousarray(points).view(np.float32).reshape(-1, 4)


def backproject(
    score_map: np.ndarray,
    mask: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: PinholeIntrinsics,
    *,
    min_range: float = 0.0,
    max_range: float = math.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """3D points of the masked pixels that have valid depth.

    Args:
        score_map: (H, W) float scores.
        mask: (H, W) anomalous pixels (nonzero / True), e.g. ``postprocess.anomaly_mask``.
        depth_m: (H, W) depth in metres, aligned to ``score_map`` (see :func:`match_depth_size`).
        intrinsics: Intrinsics of this image; scaled if they are for another size.
        min_range: Smallest valid depth (z) in metres.
        max_range: Largest valid depth (z) in metres.

    Returns:
        ``(points, pixels)``: the points as :data:`POINT_DTYPE` in row-major pixel order, and
        each point's flat pixel index (``row * W + col``, int64).
    """
    if score_map.shape != mask.shape or score_map.shape != depth_m.shape:
        raise ValueError(
            f"score map {score_map.shape}, mask {mask.shape} and depth {depth_m.shape} must have one shape"
        )
    height, width = score_map.shape
    k = intrinsics.scaled_to(width, height)
    pixels = np.flatnonzero(mask)
    z = depth_m.reshape(-1)[pixels]
    # NaN compares False, so this also drops NaN; > 0 drops the "no return" zeros.
    valid = (z > 0) & (z >= min_range) & (z <= max_range) & np.isfinite(z)
    pixels, z = pixels[valid], z[valid]
    rows, cols = np.divmod(pixels, width)
    points = np.empty(pixels.size, POINT_DTYPE)
    points["x"] = (cols.astype(np.float32) - np.float32(k.cx)) * z * np.float32(1.0 / k.fx)
    points["y"] = (rows.astype(np.float32) - np.float32(k.cy)) * z * np.float32(1.0 / k.fy)
    points["z"] = z
    points["score"] = score_map.reshape(-1)[pixels]
    return points, pixels


def voxel_downsample(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """One point per occupied voxel: the mean position of its points and their maximum score.

    Voxels are cubes of ``voxel_size`` metres aligned to the frame's origin, so the same
    surface gives the same voxels from frame to frame. Output order is by voxel key.

    Args:
        points: :data:`POINT_DTYPE` array.
        voxel_size: Edge length in metres; <= 0 returns ``points`` unchanged.
    """
    if voxel_size <= 0 or points.size == 0:
        return points
    # Column-major (4, N): every reduction below runs over one contiguous row, which numpy
    # does several times faster than over axis 0 of an (N, 3) array.
    columns = np.ascontiguousarray(_as_columns(points).T)
    cells = np.floor(columns[:3] * np.float32(1.0 / voxel_size)).astype(np.int64)
    cells -= cells.min(axis=1, keepdims=True)
    dims = cells.max(axis=1) + 1
    if float(dims[0]) * float(dims[1]) * float(dims[2]) < 2.0**62:
        # One int64 key per voxel (row-major over the occupied bounding box): a single 1-D sort.
        keys = (cells[0] * dims[1] + cells[1]) * dims[2] + cells[2]
    else:  # a huge extent for the voxel size: the packed key would overflow
        keys = np.unique(cells.T, axis=0, return_inverse=True)[1].reshape(-1)
    order = np.argsort(keys)
    keys = keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, keys.size])
    ordered = np.take(columns, order, axis=1)  # (4, N) C-contiguous, unlike columns[:, order]
    out = np.empty(starts.size, POINT_DTYPE)
    out_columns = _as_columns(out)
    for axis in range(3):
        # Sum in float64: a float32 sum of many points drifts by more than a small voxel allows.
        sums = np.add.reduceat(ordered[axis], starts, dtype=np.float64)
        out_columns[:, axis] = sums / counts
    out_columns[:, 3] = np.maximum.reduceat(ordered[3], starts)
    return out


def region_labels(mask: np.ndarray, regions: Sequence[Region]) -> tuple[np.ndarray, list[int]]:
    """Connected-component labels of ``mask`` and the label of each region.

    ``postprocess.find_regions`` labels the same mask with the same algorithm (8-connectivity),
    so every region is exactly one component; it is identified by its box and area.

    Returns:
        ``(labels, ids)``: (H, W) int32 labels (0 = background) and one label per region.

    Raises:
        ValueError: A region matches no component (it was computed from another mask).
    """
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8) if mask.dtype == bool else mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask_u8, connectivity=8, ltype=cv2.CV_32S)
    by_key: dict[tuple[int, ...], list[int]] = {}
    for label in range(1, stats.shape[0]):
        key = tuple(int(v) for v in stats[label, : cv2.CC_STAT_AREA + 1])
        by_key.setdefault(key, []).append(label)
    ids = []
    for region in regions:
        matches = by_key.get((region.x, region.y, region.width, region.height, region.area))
        if not matches:
            raise ValueError(f"region {region} is not a connected component of the given mask")
        ids.append(matches.pop(0))
    return labels, ids


def regions_3d(
    points: np.ndarray,
    pixels: np.ndarray,
    labels: np.ndarray,
    region_ids: Sequence[int],
    *,
    box_quantile: float = 0.0,
) -> list[Region3D | None]:
    """Per-region centroid, box, point count and peak score.

    Args:
        points: Full-resolution points from :func:`backproject`.
        pixels: Their flat pixel indices (from :func:`backproject`).
        labels: (H, W) component labels (from :func:`region_labels`).
        region_ids: The label of each region, in region order.
        box_quantile: Trim fraction per axis and end (0 = exact min-max box).

    Returns:
        One :class:`Region3D` per region id, None where the region has no point.
    """
    point_labels = labels.reshape(-1)[pixels]
    order = np.argsort(point_labels, kind="stable")
    sorted_labels = point_labels[order]
    # (4, N) column-major, one gather: each region is a contiguous slice of every row, and
    # reductions over a contiguous row are several times faster than over axis 0 of (N, 3).
    ordered = np.take(_as_columns(points).T, order, axis=1)  # C-contiguous, unlike [:, order]
    ids = np.asarray(region_ids, dtype=point_labels.dtype)
    starts = np.searchsorted(sorted_labels, ids, side="left")
    ends = np.searchsorted(sorted_labels, ids, side="right")
    out: list[Region3D | None] = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        if end == start:
            out.append(None)
            continue
        xyz = ordered[:3, start:end]
        if box_quantile > 0:
            lo, hi = np.quantile(xyz, [box_quantile, 1.0 - box_quantile], axis=1)
        else:
            lo, hi = xyz.min(axis=1), xyz.max(axis=1)
        out.append(
            Region3D(
                centroid=tuple(float(v) for v in xyz.mean(axis=1, dtype=np.float64)),  # type: ignore[arg-type]
                box_min=tuple(float(v) for v in lo),  # type: ignore[arg-type]
                box_max=tuple(float(v) for v in hi),  # type: ignore[arg-type]
                num_points=int(end - start),
                peak_score=float(ordered[3, start:end].max()),
            )
        )
    return out


def anomalies_3d(
    score_map: np.ndarray,
    mask: np.ndarray,
    regions: Sequence[Region],
    depth_m: np.ndarray,
    intrinsics: PinholeIntrinsics,
    settings: DepthSettings,
    *,
    labels: tuple[np.ndarray, list[int]] | None = None,
) -> Anomalies3D:
    """The whole 3D stage of one frame: cloud (optionally voxelised) and per-region boxes.

    Args:
        score_map: (H, W) float scores at the colour image's resolution.
        mask: Its anomaly mask (``postprocess.anomaly_mask``, nonzero = anomalous).
        regions: ``postprocess.find_regions`` of that mask (may be a subset: min_area, max_regions).
        depth_m: Depth in metres (:func:`depth_to_metres`), any size with the image's aspect ratio.
        intrinsics: Colour camera intrinsics (:meth:`PinholeIntrinsics.from_camera_info`).
        settings: Range limits, voxel size and box trimming.
        labels: ``(labels, ids)`` as :func:`region_labels` returns them, if the caller already has
            the mask's component labels (saves a labelling pass: 2.5 ms or more at 640x480).
    """
    height, width = score_map.shape
    depth_m = match_depth_size(depth_m, height, width)
    points, pixels = backproject(
        score_map, mask, depth_m, intrinsics, min_range=settings.min_range, max_range=settings.max_range
    )
    if regions:
        label_image, ids = labels if labels is not None else region_labels(mask, regions)
        if len(ids) != len(regions):
            raise ValueError(f"got {len(ids)} region label ids for {len(regions)} regions")
        boxes = regions_3d(points, pixels, label_image, ids, box_quantile=settings.box_quantile)
    else:
        boxes = []
    return Anomalies3D(
        points=voxel_downsample(points, settings.voxel_size), regions=boxes, valid_pixels=int(points.size)
    )
