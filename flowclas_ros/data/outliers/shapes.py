"""Random 2-D shapes as masks: star-shaped polygons and smooth blobs.

Shared by the scene generator (rocks, debris) and Outlier Exposure (random
crops and synthetic anomalies).
"""

from __future__ import annotations

import cv2
import numpy as np


def random_polygon(
    rng: np.random.Generator,
    n_vertices: tuple[int, int] = (3, 12),
    irregularity: float = 0.5,
) -> np.ndarray:
    """Vertices of a random star-shaped polygon in the unit box [-1, 1]^2.

    Args:
        rng: Random source.
        n_vertices: Inclusive range of the vertex count.
        irregularity: 0 gives a regular polygon; 1 gives very uneven radii and
            angle gaps.

    Returns:
        (N, 2) float32 array of (x, y), scaled so the polygon touches the box.
    """
    n = int(rng.integers(n_vertices[0], n_vertices[1] + 1))
    gaps = 1.0 + irregularity * rng.uniform(-0.9, 0.9, n)
    angles = np.cumsum(gaps / gaps.sum() * 2 * np.pi) + rng.uniform(0, 2 * np.pi)
    radii = np.clip(1.0 + irregularity * rng.normal(0.0, 0.35, n), 0.25, 2.0)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    return _fit_unit_box(pts)


def random_blob(rng: np.random.Generator, harmonics: int = 5, roughness: float = 0.25) -> np.ndarray:
    """Outline of a smooth random blob: a radius modulated by low harmonics.

    Args:
        rng: Random source.
        harmonics: Highest angular harmonic of the radius function.
        roughness: Amplitude of the radius modulation.

    Returns:
        (64, 2) float32 outline in the unit box [-1, 1]^2.
    """
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, harmonics + 1):
        radius += rng.normal(0.0, roughness / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = np.clip(radius, 0.3, None)
    pts = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    return _fit_unit_box(pts)


def _fit_unit_box(pts: np.ndarray) -> np.ndarray:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return ((pts - lo) / np.maximum(hi - lo, 1e-6) * 2.0 - 1.0).astype(np.float32)


def fill_outline(outline: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterises a unit-box outline so that it spans a (height, width) box.

    Args:
        outline: (N, 2) vertices in [-1, 1]^2 as returned by the functions above.
        height: Mask height in pixels.
        width: Mask width in pixels.

    Returns:
        Boolean (height, width) mask.
    """
    pts = (outline + 1.0) * 0.5 * np.array([width - 1, height - 1], np.float32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def random_shape_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random polygon or blob filling a (height, width) box, as a boolean mask."""
    outline = random_polygon(rng) if rng.random() < 0.5 else random_blob(rng)
    return fill_outline(outline, height, width)
