"""Outlier Exposure (OE) as in FlowCLAS: hard-paste outlier objects into inlier images.

Per training sample OE yields the mixed image (inlier + pasted object), the
mask of the pasted pixels and the standalone outlier image with its own object
mask, which the contrastive loss uses as extra contrast pixels.

Sources (``OEConfig.kind``):

* ``coco``: a COCO-style folder (``images/`` + ``masks/``, mask > 0 = object);
  the object is rescaled by a factor from ``scales``, cut by its bounding box
  and hard-pasted at a uniform random location. ``coco_scale: area`` scales
  relative to the COCO image resized to the inlier's area; ``native`` is the
  official pipeline (:mod:`flowclas_ros.data.outliers.coco`: factors of the native
  COCO image, standalone image at native scale, optional ToGray and ignored
  COCO background; also reads the Meta-OoD ``ood_seg_train2017`` layout).
* ``folder``: any image folder without masks; random-shaped crops are pasted.
* ``synthetic`` (default, needs no data): CL-flow style Perlin-noise masks
  with textures, cut-paste from other inliers, random polygons/blobs.

Everything is deterministic given the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.outliers.coco import CocoNativeSource
from flowclas_ros.data.outliers.sources import (
    CocoFolderSource,
    ImageFolderSource,
    InlierPool,
    OutlierObject,
    SyntheticSource,
)


@dataclass
class SyntheticOEConfig:
    """Synthetic anomalies (used when ``OEConfig.kind == "synthetic"``).

    Attributes:
        weights: Mixture weights of ``perlin``, ``cutpaste`` and ``shapes``.
        texture_folder: Optional folder of images used to fill Perlin masks.
        builtin_textures: Also fill with scikit-image's sample photos/textures
            (always available offline); procedural textures are always used.
    """

    weights: dict[str, float] = field(default_factory=lambda: {"perlin": 1.0, "cutpaste": 1.0, "shapes": 1.0})
    texture_folder: str = ""
    builtin_textures: bool = True


@dataclass
class OEConfig:
    """Outlier Exposure settings, embeddable in the training config (e.g. under key ``oe``).

    Attributes:
        kind: ``synthetic`` (default), ``coco`` or ``folder``.
        folder: Root of the outlier data for ``coco`` (``images/`` + ``masks/``)
            or ``folder`` (``images/`` or flat).
        scales: Rescale factors for ``coco`` objects, drawn uniformly (a repeated
            factor is drawn more often; official ``[.1, .125, .25, .5, .5, .75]``).
        coco_scale: ``area``: factors apply to the COCO image resized to the
            inlier's area. ``native``: the official pipeline (factors of the
            native COCO image, standalone image at native scale).
        gray_p: ``native`` COCO: ToGray probability of each copy (official ALLO 0.5).
        ignore_background: ``native`` COCO: the standalone image's non-object
            pixels are ignored (official ALLO ``ignore_coco_bg``).
        area_range: Pasted area as a fraction of the inlier for ``synthetic``
            and ``folder`` (drawn log-uniformly).
        probability: Chance that OE is applied to a sample.
        synthetic: Settings of the synthetic source.
    """

    kind: Literal["synthetic", "coco", "folder"] = "synthetic"
    folder: str = ""
    scales: list[float] = field(default_factory=lambda: [0.1, 0.125, 0.25, 0.5, 0.75])
    coco_scale: Literal["area", "native"] = "area"
    gray_p: float = 0.0
    ignore_background: bool = False
    area_range: tuple[float, float] = (0.005, 0.1)
    probability: float = 1.0
    synthetic: SyntheticOEConfig = field(default_factory=SyntheticOEConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if not 0.0 <= self.gray_p <= 1.0:
            raise ValueError(f"gray_p must be in [0, 1], got {self.gray_p}")
        lo, hi = self.area_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"area_range must satisfy 0 < min <= max <= 1, got {self.area_range}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive numbers, got {self.scales}")


@dataclass
class OESample:
    """The result of Outlier Exposure on one inlier image (all arrays share the inlier's H, W).

    Attributes:
        mixed: uint8 (H, W, 3), the inlier with the object pasted.
        paste_mask: uint8 (H, W), 1 where pasted pixels replaced the inlier, else 0.
        outlier_image: uint8 (H, W, 3), the standalone outlier image.
        outlier_mask: uint8 (H, W) for ``outlier_image``: 1 object, 0 other
            pixels, 255 ignore (padding).
        source: What made the object ("coco", "folder", "perlin", "cutpaste",
            "shapes", or "none" when OE was skipped).
        applied: False when OE was skipped (``probability``); then mixed and
            outlier_image are copies of the inlier and both masks are 0.
    """

    mixed: np.ndarray
    paste_mask: np.ndarray
    outlier_image: np.ndarray
    outlier_mask: np.ndarray
    source: str
    applied: bool


def paste_object(
    inlier: np.ndarray, obj_rgb: np.ndarray, obj_mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hard-pastes the object pixels at a uniform random location.

    An object larger than the inlier is randomly cropped to fit first.

    Args:
        inlier: uint8 (H, W, 3).
        obj_rgb: uint8 (h, w, 3) bounding-box crop of the object.
        obj_mask: bool (h, w), the object pixels.
        rng: Random source for the location.

    Returns:
        (mixed image copy, uint8 mask of the pasted pixels).
    """
    h, w = inlier.shape[:2]
    oh, ow = obj_mask.shape
    if not obj_mask.any():
        return inlier.copy(), np.zeros((h, w), np.uint8)
    if oh > h or ow > w:
        y, x = int(rng.integers(0, max(oh - h, 0) + 1)), int(rng.integers(0, max(ow - w, 0) + 1))
        obj_rgb, obj_mask = obj_rgb[y : y + h, x : x + w], obj_mask[y : y + h, x : x + w]
        oh, ow = obj_mask.shape
    top, left = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
    mixed = inlier.copy()
    paste = np.zeros((h, w), np.uint8)
    region = mixed[top : top + oh, left : left + ow]
    region[obj_mask] = obj_rgb[obj_mask]
    paste[top : top + oh, left : left + ow] = obj_mask
    return mixed, paste


class OutlierExposure:
    """Callable that turns an inlier image into an :class:`OESample`.

    Args:
        cfg: OE settings.
        rng: Default random source when a call passes none.
        inlier_pool: Returns a random other inlier (for synthetic cut-paste);
            without it cut-paste takes patches from the same image.
        key: Config key of ``cfg`` used in error messages.

    Raises:
        ConfigError: If a folder the config names is missing or has the wrong
            layout; the message names the key and the expected layout.
    """

    def __init__(
        self,
        cfg: OEConfig | None = None,
        rng: np.random.Generator | None = None,
        inlier_pool: InlierPool | None = None,
        key: str = "oe",
    ) -> None:
        self.cfg = cfg = cfg or OEConfig()
        self.rng = rng if rng is not None else np.random.default_rng(0)
        if cfg.kind == "coco" and cfg.coco_scale == "native":
            self.source = CocoNativeSource(
                cfg.folder, cfg.scales, cfg.gray_p, cfg.ignore_background, key=f"{key}.folder"
            )
        elif cfg.kind == "coco":
            self.source = CocoFolderSource(cfg.folder, cfg.scales, key=f"{key}.folder")
        elif cfg.kind == "folder":
            self.source = ImageFolderSource(cfg.folder, cfg.area_range, key=f"{key}.folder")
        elif cfg.kind == "synthetic":
            syn = cfg.synthetic
            self.source = SyntheticSource(
                syn.weights,
                cfg.area_range,
                syn.texture_folder,
                syn.builtin_textures,
                inlier_pool,
                f"{key}.synthetic",
            )
        else:
            raise ConfigError(f"{key}.kind: {cfg.kind!r} is not one of ['synthetic', 'coco', 'folder']")

    def draw_object(self, inlier: np.ndarray, rng: np.random.Generator) -> OutlierObject:
        """One outlier object from the configured source, sized for ``inlier``."""
        return self.source.draw(inlier, rng)

    def __call__(self, inlier: np.ndarray, rng: np.random.Generator | None = None) -> OESample:
        """Applies OE to an RGB uint8 (H, W, 3) inlier; returns new arrays (the input is not modified)."""
        if inlier.ndim != 3 or inlier.shape[2] != 3 or inlier.dtype != np.uint8:
            raise ValueError(f"inlier must be an HxWx3 uint8 RGB array, got {inlier.dtype} {inlier.shape}")
        rng = rng if rng is not None else self.rng
        h, w = inlier.shape[:2]
        if rng.random() >= self.cfg.probability:
            zeros = np.zeros((h, w), np.uint8)
            return OESample(inlier.copy(), zeros, inlier.copy(), zeros.copy(), "none", False)
        obj = self.draw_object(inlier, rng)
        mixed, paste_mask = paste_object(inlier, obj.rgb, obj.mask, rng)
        if obj.standalone is not None:
            outlier_image, outlier_mask = obj.standalone
        else:  # the object in a different place on the same inlier: background pixels are true inliers
            outlier_image, outlier_mask = paste_object(inlier, obj.rgb, obj.mask, rng)
        return OESample(mixed, paste_mask, outlier_image, outlier_mask, obj.source, True)
