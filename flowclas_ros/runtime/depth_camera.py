"""Camera intrinsics and depth images for the 3D outputs: units, alignment, size (no ROS).

* **Intrinsics.** :meth:`PinholeIntrinsics.from_camera_info` takes
  ``CameraInfo``'s ``k``, ``p`` (and ``d``) arrays. For a rectified image the
  projection is P's left 3x3 (K describes the raw, distorted image), so P is
  used when it is filled in, K otherwise. For a distortion-free camera
  (``d`` all zero, as depth cameras publish for aligned streams) both agree.
* **Depth units (REP-118).** ``16UC1`` holds millimetres, ``32FC1`` metres;
  ``depth_scale`` (metres per raw unit) overrides that for sensors with other
  units. Invalid depth is excluded: 0, NaN, +-inf, and anything outside
  ``[min_range, max_range]``. The range limits apply to the depth value z (what
  the sensor measures and specifies limits in), not the Euclidean distance.
* **Resolution.** Scores are at the colour image's resolution. A depth image
  of another size with the same aspect ratio is resized to it with exact
  nearest-neighbour sampling: interpolating depth would invent "flying" points
  between a foreground object and the background. A different aspect ratio
  means the depth is not aligned to this image and is rejected. Intrinsics from
  a ``CameraInfo`` of another size are scaled like an image resize.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

REP118_DEPTH_SCALE = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}
"""Metres per raw unit of each depth encoding, as REP-118 defines (``mono16`` treated as ``16UC1``)."""

_ASPECT_TOLERANCE = 0.01


@dataclass(frozen=True)
class PinholeIntrinsics:
    """Pinhole projection of a rectified image of ``width`` x ``height`` pixels.

    Attributes:
        fx: Focal length along x, in pixels.
        fy: Focal length along y, in pixels.
        cx: Principal point column, in pixels (pixel centres at integers).
        cy: Principal point row, in pixels.
        width: Image width the values refer to.
        height: Image height the values refer to.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(
                f"camera intrinsics need finite fx, fy > 0 and finite cx, cy; got fx={self.fx}, "
                f"fy={self.fy}, cx={self.cx}, cy={self.cy} (is the camera calibrated? K[0] == 0 means not)"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera intrinsics need a positive image size, got {self.width}x{self.height}")

    @classmethod
    def from_camera_info(
        cls,
        k: Sequence[float],
        p: Sequence[float] | None,
        width: int,
        height: int,
    ) -> PinholeIntrinsics:
        """Intrinsics from ``sensor_msgs/CameraInfo`` arrays.

        Args:
            k: Row-major 3x3 camera matrix (``CameraInfo.k``).
            p: Row-major 3x4 projection matrix (``CameraInfo.p``), or None. Used when
                filled in (``p[0] > 0``): it is the projection of the rectified image.
            width: ``CameraInfo.width``.
            height: ``CameraInfo.height``.

        Raises:
            ValueError: Wrong array sizes, an uncalibrated camera (zero focal length) or a zero size.
        """
        k = [float(v) for v in k]
        if len(k) != 9:
            raise ValueError(f"CameraInfo.k must have 9 values, got {len(k)}")
        if p is not None:
            p = [float(v) for v in p]
            if len(p) != 12:
                raise ValueError(f"CameraInfo.p must have 12 values, got {len(p)}")
            if p[0] > 0 and p[5] > 0:
                return cls(fx=p[0], fy=p[5], cx=p[2], cy=p[6], width=int(width), height=int(height))
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=int(width), height=int(height))

    def scaled_to(self, width: int, height: int) -> PinholeIntrinsics:
        """The intrinsics of this image resized to ``width`` x ``height`` (pixel-area convention)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        # Pixel centres sit at integers, so the edge (-0.5) is what scales: c' = (c + 0.5) s - 0.5.
        return PinholeIntrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=int(width),
            height=int(height),
        )


def depth_to_metres(depth: np.ndarray, encoding: str, depth_scale: float = 0.0) -> np.ndarray:
    """Depth in metres as float32 (invalid values are kept; :func:`backproject` drops them).

    Args:
        depth: (H, W) raw depth values, e.g. from ``data.image_codec.decode_float`` (unscaled).
        encoding: The depth image's encoding (``16UC1``, ``32FC1``, ...).
        depth_scale: Metres per raw unit; 0 uses :data:`REP118_DEPTH_SCALE` for ``encoding``.

    Raises:
        ValueError: ``depth_scale`` is 0 and ``encoding`` has no REP-118 unit.
    """
    scale = depth_scale if depth_scale > 0 else REP118_DEPTH_SCALE.get(encoding)
    if scale is None:
        raise ValueError(
            f"depth encoding {encoding!r} has no REP-118 unit (known: {', '.join(REP118_DEPTH_SCALE)}); "
            "set depth_scale (metres per raw unit)"
        )
    depth = np.asarray(depth, dtype=np.float32)
    return depth if scale == 1.0 else depth * np.float32(scale)


def match_depth_size(depth_m: np.ndarray, height: int, width: int) -> np.ndarray:
    """``depth_m`` at ``height`` x ``width``: unchanged, or resized with exact nearest-neighbour sampling.

    Raises:
        ValueError: The aspect ratios differ (the depth is not aligned to this image).
    """
    if depth_m.ndim != 2:
        raise ValueError(f"depth image must be 2-D, got shape {depth_m.shape}")
    dh, dw = depth_m.shape
    if (dh, dw) == (height, width):
        return depth_m
    if dh == 0 or dw == 0 or abs((dw / dh) / (width / height) - 1.0) > _ASPECT_TOLERANCE:
        raise ValueError(
            f"depth image {dw}x{dh} does not match the colour image {width}x{height} in aspect ratio; "
            "subscribe to a depth image aligned (registered) to the colour camera"
        )
    return cv2.resize(depth_m, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
