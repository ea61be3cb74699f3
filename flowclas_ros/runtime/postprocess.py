"""Score map -> mask, connected anomalous regions and an RGB overlay (no ROS imports).

Shared by the ROS node and the evaluation reports. A pixel is anomalous when
its score is **at or above** the threshold (``score >= threshold``); NaN
scores are never anomalous. The comparison is :func:`flowclas_ros.runtime.decision.at_or_above`,
the one every decision uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from flowclas_ros.runtime.decision import at_or_above

_BOX_COLOUR = (255, 255, 255)
_SHADOW_COLOUR = (0, 0, 0)
_TEXT_BG = (0, 0, 0)
_ANOMALY_TEXT = (255, 64, 64)
_NORMAL_TEXT = (96, 255, 96)


@dataclass(frozen=True)
class Region:
    """One 8-connected region of anomalous pixels.

    Attributes:
        x: Leftmost column of the bounding box.
        y: Topmost row of the bounding box.
        width: Box width in pixels (>= 1).
        height: Box height in pixels (>= 1).
        peak_score: Highest score inside the region.
        mean_score: Mean score over the region's pixels.
        area: Number of anomalous pixels in the region (<= width * height).
    """

    x: int
    y: int
    width: int
    height: int
    peak_score: float
    mean_score: float
    area: int


def _check_map(score_map: np.ndarray) -> np.ndarray:
    score_map = np.asarray(score_map)
    if score_map.ndim != 2 or score_map.dtype.kind != "f":
        raise ValueError(f"score map must be a 2-D float array, got {score_map.shape} {score_map.dtype}")
    return score_map


def anomaly_mask(score_map: np.ndarray, threshold: float) -> np.ndarray:
    """Binary mask of the anomalous pixels.

    Args:
        score_map: (H, W) float scores.
        threshold: Pixels with ``score >= threshold`` are anomalous.

    Returns:
        (H, W) uint8 with 255 for anomalous pixels and 0 elsewhere (NaN -> 0).
    """
    mask = at_or_above(_check_map(score_map), threshold)
    return mask.view(np.uint8) * np.uint8(255)


def anomalous_fraction(score_map: np.ndarray, threshold: float) -> float:
    """Fraction of pixels with ``score >= threshold``, in [0, 1] (0 for an empty map)."""
    score_map = _check_map(score_map)
    if score_map.size == 0:
        return 0.0
    return float(np.count_nonzero(at_or_above(score_map, threshold))) / score_map.size


def find_regions(
    score_map: np.ndarray,
    threshold: float,
    min_area: int = 1,
    *,
    max_regions: int | None = None,
    mask: np.ndarray | None = None,
) -> list[Region]:
    """Connected components (8-connectivity) of the anomalous pixels, largest first.

    Args:
        score_map: (H, W) float scores.
        threshold: Pixels with ``score >= threshold`` are anomalous.
        min_area: Regions with fewer pixels are dropped.
        max_regions: Keep at most this many (the largest); None keeps all.
        mask: The precomputed :func:`anomaly_mask` of ``score_map`` (saves one pass).

    Returns:
        Regions sorted by area (descending), ties by peak score (descending).
    """
    score_map = _check_map(score_map)
    if mask is None:
        mask = anomaly_mask(score_map, threshold)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    if count <= 1:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(int(min_area), 1)) + 1  # label ids
    if keep.size == 0:
        return []
    # Per-label sum and max over the foreground pixels only, vectorised.
    fg = labels > 0
    fg_labels, fg_scores = labels[fg], score_map[fg].astype(np.float64)
    sums = np.bincount(fg_labels, weights=fg_scores, minlength=count)
    peaks = np.full(count, -np.inf)
    np.maximum.at(peaks, fg_labels, fg_scores)
    order = sorted(keep.tolist(), key=lambda i: (-int(stats[i, cv2.CC_STAT_AREA]), -peaks[i]))
    if max_regions is not None:
        order = order[: max(int(max_regions), 0)]
    return [
        Region(
            x=int(stats[i, cv2.CC_STAT_LEFT]),
            y=int(stats[i, cv2.CC_STAT_TOP]),
            width=int(stats[i, cv2.CC_STAT_WIDTH]),
            height=int(stats[i, cv2.CC_STAT_HEIGHT]),
            peak_score=float(peaks[i]),
            mean_score=float(sums[i] / stats[i, cv2.CC_STAT_AREA]),
            area=int(stats[i, cv2.CC_STAT_AREA]),
        )
        for i in order
    ]


def heat_weights(
    score_map: np.ndarray, alpha: float, score_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised scores (uint8 0..255) and per-pixel blend weights (float32 0..alpha).

    Scores are mapped linearly from ``score_range`` (default: the map's finite
    min and max) onto 0..1; the weight grows with the normalised score, so
    normal areas keep the camera image and anomalous ones show the heat map.
    """
    score_map = _check_map(score_map)
    if score_range is None:
        finite = score_map[np.isfinite(score_map)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    else:
        low, high = float(score_range[0]), float(score_range[1])
    span = high - low
    if not span > 1e-12:
        norm = np.zeros(score_map.shape, np.float32)
    else:
        norm = (score_map.astype(np.float32) - np.float32(low)) * np.float32(1.0 / span)
        np.clip(np.nan_to_num(norm, nan=0.0), 0.0, 1.0, out=norm)
    level = cv2.convertScaleAbs(norm, alpha=255.0)
    return level, norm * np.float32(alpha)


def _put_label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour: tuple) -> None:
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    x = min(max(origin[0], 0), max(image.shape[1] - tw - 2, 0))
    y = min(max(origin[1], th + 2), image.shape[0] - base - 1)
    cv2.rectangle(image, (x, y - th - 2), (x + tw + 2, y + base), _TEXT_BG, cv2.FILLED)
    cv2.putText(image, text, (x + 1, y), font, scale, colour, thickness, cv2.LINE_AA)


def render_overlay(
    rgb: np.ndarray,
    score_map: np.ndarray,
    threshold: float,
    regions: list[Region] | None = None,
    alpha: float = 0.5,
    score_range: tuple[float, float] | None = None,
    label: bool = True,
    *,
    image_score: float | None = None,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Heat map blended on the image, region boxes and the image score, for RViz and reports.

    Args:
        rgb: (H, W, 3) uint8 RGB image the scores belong to.
        score_map: (H, W) float scores at the image's resolution.
        threshold: Decision threshold (shown in the label; boxes are drawn for ``regions``).
        regions: Regions to box (e.g. from :func:`find_regions`); None draws none.
        alpha: Largest heat-map weight, in [0, 1] (reached at the top of ``score_range``).
        score_range: (low, high) scores mapped to the colour map's ends; None uses the map's range
            (a fixed range keeps colours comparable across frames).
        label: Write the image score, the threshold and each region's peak score.
        image_score: Image-level score for the label (default: the map's finite maximum).
        colormap: OpenCV colour map id.

    Returns:
        New (H, W, 3) uint8 RGB image.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"overlay needs an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    score_map = _check_map(score_map)
    if score_map.shape != rgb.shape[:2]:
        raise ValueError(f"score map {score_map.shape} does not match image {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    level, weight = heat_weights(score_map, alpha, score_range)
    heat = cv2.cvtColor(cv2.applyColorMap(level, colormap), cv2.COLOR_BGR2RGB)
    out = cv2.blendLinear(np.ascontiguousarray(rgb), heat, np.float32(1.0) - weight, weight)
    height, width = out.shape[:2]
    scale = max(0.35, min(height, width) / 900.0)
    for region in regions or []:
        top_left = (region.x, region.y)
        bottom_right = (region.x + region.width - 1, region.y + region.height - 1)
        cv2.rectangle(out, top_left, bottom_right, _SHADOW_COLOUR, 3)
        cv2.rectangle(out, top_left, bottom_right, _BOX_COLOUR, 1)
        if label:
            _put_label(out, f"{region.peak_score:.2f}", (region.x, region.y - 3), scale * 0.8, _BOX_COLOUR)
    if label:
        if image_score is None:
            finite = score_map[np.isfinite(score_map)]
            image_score = float(finite.max()) if finite.size else float("nan")
        anomalous = at_or_above(float(image_score), threshold)
        text = f"{'ANOMALY' if anomalous else 'normal'} {image_score:.3f} (thr {threshold:.3f})"
        _put_label(out, text, (4, 4), scale, _ANOMALY_TEXT if anomalous else _NORMAL_TEXT)
    return out
