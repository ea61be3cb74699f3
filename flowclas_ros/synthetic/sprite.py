"""Drawing kit for the synthetic scenes' objects: the :class:`Sprite` they render to, and shading.

A :class:`Sprite` is straight (not premultiplied) RGB in [0, 1] scene units, an
alpha matte, the row where the object touches the ground and its height in
pixels (for the cast shadow). :class:`Raster` draws flat polygons at 2x and
area-downsamples them, which anti-aliases the edges cheaply.

Conventions: image x right, y down. ``ratio`` is the perspective foreshortening
of the ground plane at the object's row (vertical / horizontal size of a flat
circle, ~0.1 near the horizon, ~1 looking straight down). ``light`` is the unit
vector towards the sun in camera coordinates (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUPERSAMPLE = 2


@dataclass
class Sprite:
    """A rendered object before it is placed in the scene.

    Attributes:
        rgb: Straight colour (h, w, 3) float32, shading included.
        alpha: Coverage (h, w) float32 in [0, 1].
        base_row: Sprite row that touches the ground (placed on the scene row).
        height_px: Height above the ground in pixels (sets the shadow length).
        standing: True for upright objects (shadow by shearing the silhouette),
            False for objects lying flat (shadow = silhouette shifted).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    base_row: float
    height_px: float
    standing: bool = False


class Raster:
    """Flat-colour polygons and polylines drawn at 2x, downsampled to anti-alias."""

    def __init__(self, height: int, width: int) -> None:
        self.ss = SUPERSAMPLE
        self.rgb = np.zeros((height * self.ss, width * self.ss, 3), np.float32)
        self.alpha = np.zeros((height * self.ss, width * self.ss), np.float32)

    def _pts(self, pts: np.ndarray) -> list[np.ndarray]:
        return [np.round((np.asarray(pts, np.float32) * self.ss + (self.ss - 1) / 2) * 16).astype(np.int32)]

    def poly(self, pts: np.ndarray, color, alpha: float = 1.0) -> None:
        """Fills a polygon given in output-pixel coordinates."""
        cv2.fillPoly(self.rgb, self._pts(pts), tuple(float(c) for c in color), cv2.LINE_8, 4)
        cv2.fillPoly(self.alpha, self._pts(pts), float(alpha), cv2.LINE_8, 4)

    def line(self, pts: np.ndarray, color, thickness: float, alpha: float = 1.0) -> None:
        """Draws an open polyline ``thickness`` output pixels wide."""
        t = max(1, int(round(thickness * self.ss)))
        cv2.polylines(self.rgb, self._pts(pts), False, tuple(float(c) for c in color), t, cv2.LINE_8, 4)
        cv2.polylines(self.alpha, self._pts(pts), False, float(alpha), t, cv2.LINE_8, 4)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Supersampled pixel-centre coordinates (x, y) in output pixels."""
        h, w = self.alpha.shape
        ys = (np.arange(h, dtype=np.float32) + 0.5) / self.ss - 0.5
        xs = (np.arange(w, dtype=np.float32) + 0.5) / self.ss - 0.5
        return np.meshgrid(xs, ys)

    def finish(self, base_row: float, height_px: float, standing: bool = False) -> Sprite:
        """Area-downsample the 2x canvas to a :class:`Sprite`."""
        h, w = self.alpha.shape[0] // self.ss, self.alpha.shape[1] // self.ss
        premult = cv2.resize(self.rgb * self.alpha[:, :, None], (w, h), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(self.alpha, (w, h), interpolation=cv2.INTER_AREA)
        rgb = premult / np.maximum(alpha, 1e-4)[:, :, None]
        return Sprite(
            rgb=np.clip(rgb, 0, 1.5),
            alpha=np.clip(alpha, 0, 1),
            base_row=base_row,
            height_px=height_px,
            standing=standing,
        )


def fit_frame(points: list[np.ndarray], pad: float = 2.0) -> tuple[list[np.ndarray], int, int]:
    """Shifts point sets so they fit a canvas with ``pad`` pixels margin."""
    allp = np.concatenate(points, axis=0)
    lo = allp.min(axis=0) - pad
    hi = allp.max(axis=0) + pad
    w, h = int(np.ceil(hi[0] - lo[0])) + 1, int(np.ceil(hi[1] - lo[1])) + 1
    return [p - lo for p in points], h, w


def ground_transform(pts: np.ndarray, angle: float, ratio: float) -> np.ndarray:
    """Object lying on the ground: rotate in the ground plane, then foreshorten depth."""
    c, s = np.cos(angle), np.sin(angle)
    x = pts[:, 0] * c - pts[:, 1] * s
    y = pts[:, 0] * s + pts[:, 1] * c
    return np.stack([x, -y * ratio], axis=1).astype(np.float32)


def lambert(normal: np.ndarray, light: np.ndarray, ambient: float) -> float:
    """Diffuse brightness of a face with unit ``normal``, never below ``ambient``."""
    return ambient + (1.0 - ambient) * max(0.0, float(np.dot(normal, light)))


def flat_shade(light: np.ndarray, ambient: float) -> float:
    """Brightness of a surface lying on the ground (normal = up = -y)."""
    return lambert(np.array([0.0, -1.0, 0.0]), light, ambient)


def sheen(raster: Raster, rng: np.random.Generator, strength: float) -> None:
    """Adds a soft specular band in a random direction (metal / plastic look)."""
    gx, gy = raster.grid()
    theta = rng.uniform(0, np.pi)
    proj = gx * np.cos(theta) + gy * np.sin(theta)
    lo, hi = float(proj.min()), float(proj.max())
    centre = rng.uniform(lo, hi)
    width = (hi - lo) * rng.uniform(0.08, 0.25) + 1e-3
    band = np.exp(-(((proj - centre) / width) ** 2))
    raster.rgb += strength * band[:, :, None] * (raster.alpha[:, :, None] > 0)


def jitter_color(rng: np.random.Generator, color, amount: float = 0.06) -> np.ndarray:
    """Colour times a small random per-channel and overall gain."""
    c = np.asarray(color, np.float32) * rng.uniform(1 - amount, 1 + amount, 3) * rng.uniform(0.9, 1.1)
    return np.clip(c, 0, 1)
