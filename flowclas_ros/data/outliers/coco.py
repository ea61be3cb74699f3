"""The official FlowCLAS COCO paste: objects at a fixed set of native-scale factors, no area matching.

What the authors' data modules do per training sample (``src/core/data/cityscapes_coco.py`` and
``allo_coco.py`` with the ``coco_train_{mix,ood}_transform`` of ``flowclas_{city,allo}.yaml``):

* one COCO image + ``ood_seg`` mask drawn uniformly;
* the *mix* copy: optional ToGray (ALLO), rescaled by a factor drawn from
  ``scales`` (image ``cv2.INTER_AREA`` = the configs' ``interpolation: 3``,
  mask nearest), padded (centred, RGB 0, mask 255) and centre-cropped to the
  inlier crop size; the object pixels inside it are cut by their bounding box
  and pasted at a uniform random place;
* the *standalone* copy: optional ToGray drawn again, at native scale,
  padded and centre-cropped to the crop size the same way;
* ``ignore_background`` (ALLO ``ignore_coco_bg``): non-object pixels of the
  COCO mask become 255 before both copies are made.

Two folder layouts are read: ours (``ROOT/images`` + ``ROOT/masks``, mask > 0
= object) and the Meta-OoD one the authors use (``ROOT/train2017/<id>.jpg`` +
``ROOT/ood_seg_train2017/<id>.png``, 254 = object, 255 = ignore).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.images.folder import IGNORE_LABEL, DatasetError, list_images, read_label_png, read_rgb
from flowclas_ros.data.outliers.sources import OutlierObject

META_OOD_OBJECT = 254
COCO_NATIVE_LAYOUT = (
    "ROOT/images/<stem>.jpg|png + ROOT/masks/<stem>.png (mask > 0 = object), or the Meta-OoD layout "
    "ROOT/train2017/<id>.jpg + ROOT/ood_seg_train2017/<id>.png (254 = object)"
)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB -> luma -> 3 equal channels (albumentations ``ToGray``'s default method)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[:, :, None], 3, axis=2)


def pad_center_crop(
    rgb: np.ndarray, label: np.ndarray, size_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pads (centred; RGB 0, label 255) up to ``size_hw`` where smaller, then centre-crops to it.

    The two official steps ``PadIfNeeded(border_mode=0, value=0, mask_value=255)`` and ``CenterCrop``.
    """
    h, w = size_hw
    ih, iw = label.shape
    top, left = max(0, (h - ih) // 2), max(0, (w - iw) // 2)
    if ih < h or iw < w:
        ph, pw = max(h, ih), max(w, iw)
        canvas = np.zeros((ph, pw, 3), rgb.dtype)
        lab = np.full((ph, pw), IGNORE_LABEL, label.dtype)
        canvas[top : top + ih, left : left + iw] = rgb
        lab[top : top + ih, left : left + iw] = label
        rgb, label, ih, iw = canvas, lab, ph, pw
    y0, x0 = (ih - h) // 2, (iw - w) // 2
    return rgb[y0 : y0 + h, x0 : x0 + w], label[y0 : y0 + h, x0 : x0 + w]


def _pairs(root: Path, key: str) -> tuple[list[Path], list[Path], bool]:
    """(image paths, mask paths, meta_ood) of a COCO OE folder, or ConfigError naming ``key``."""
    meta_masks = root / "ood_seg_train2017"
    if meta_masks.is_dir():
        masks = sorted(meta_masks.glob("*.png"))
        images = [root / "train2017" / f"{m.stem}.jpg" for m in masks]
        meta = True
    elif (root / "images").is_dir():
        if not (root / "masks").is_dir():
            raise ConfigError(
                f"{key}: {str(root)!r} has images/ but no masks/ folder; expected {COCO_NATIVE_LAYOUT}"
            )
        try:
            images = list(list_images(root / "images").values())
        except DatasetError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
        masks = [root / "masks" / f"{p.stem}.png" for p in images]
        meta = False
    else:
        raise ConfigError(
            f"{key}: {str(root)!r} has neither images/ + masks/ nor ood_seg_train2017/ (no masks); "
            f"expected {COCO_NATIVE_LAYOUT}"
        )
    if not images:
        raise ConfigError(f"{key}: no COCO images/masks in {str(root)!r}; expected {COCO_NATIVE_LAYOUT}")
    missing = [p for p in (*images, *masks) if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{key}: {len(missing)} image/mask files missing, e.g. {missing[0]}; "
            f"expected {COCO_NATIVE_LAYOUT}"
        )
    return images, masks, meta


class CocoNativeSource:
    """COCO objects pasted the official way (see the module docstring).

    Args:
        root: The COCO OE folder (either layout).
        scales: Rescale factors drawn uniformly (duplicates weight a factor, as in the
            official ``[.1, .125, .25, .5, .5, .75]``).
        gray_p: ToGray probability, drawn separately for the mix and the standalone copy.
        ignore_background: Non-object COCO pixels are ignored (255) in the standalone mask.
        key: Config key named in error messages.

    Raises:
        ConfigError: Missing folder, masks or files (names ``key`` and the layouts).
    """

    def __init__(
        self,
        root: str | Path,
        scales: Sequence[float],
        gray_p: float = 0.0,
        ignore_background: bool = False,
        key: str = "oe.folder",
    ) -> None:
        if not str(root):
            raise ConfigError(f"{key}: required for kind 'coco'; expected {COCO_NATIVE_LAYOUT}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"{key}: folder {str(self.root)!r} not found; expected {COCO_NATIVE_LAYOUT}")
        self.images, self.masks, self.meta_ood = _pairs(self.root, key)
        self.scales = [float(s) for s in scales]
        self.gray_p = float(gray_p)
        self.ignore_background = ignore_background

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB and label (uint8: 1 object, 0 background, 255 ignore) of COCO item ``index``."""
        image = read_rgb(self.images[index])
        raw = read_label_png(self.masks[index])
        if raw.shape != image.shape[:2]:
            raise DatasetError(
                f"{self.masks[index]}: mask size {raw.shape} differs from image {image.shape[:2]}"
            )
        obj = raw == META_OOD_OBJECT if self.meta_ood else raw > 0
        ignore = raw == IGNORE_LABEL if self.meta_ood else np.zeros_like(obj)
        background = IGNORE_LABEL if self.ignore_background else 0
        label = np.where(obj, 1, np.where(ignore, IGNORE_LABEL, background)).astype(np.uint8)
        return image, label

    def draw(self, inlier: np.ndarray, rng: np.random.Generator) -> OutlierObject:
        """One object (possibly empty when the centre crop cut it away) plus the standalone image."""
        h, w = inlier.shape[:2]
        image, label = self._read(int(rng.integers(len(self.images))))
        standalone_rgb = to_gray(image) if rng.random() < self.gray_p else image
        standalone = pad_center_crop(standalone_rgb, label, (h, w))
        mix_rgb = to_gray(image) if rng.random() < self.gray_p else image
        scale = float(self.scales[rng.integers(len(self.scales))])
        # albumentations' RandomScale: int(side * scale), INTER_AREA image, nearest mask.
        size = (max(1, int(label.shape[1] * scale)), max(1, int(label.shape[0] * scale)))
        mix_rgb = cv2.resize(mix_rgb, size, interpolation=cv2.INTER_AREA)
        mix_label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        mix_rgb, mix_label = pad_center_crop(mix_rgb, mix_label, (h, w))
        obj = mix_label == 1
        if not obj.any():  # the official code then pastes nothing
            return OutlierObject(
                np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), bool), standalone, "coco", scale
            )
        rows, cols = np.flatnonzero(obj.any(axis=1)), np.flatnonzero(obj.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return OutlierObject(
            np.ascontiguousarray(mix_rgb[y0:y1, x0:x1]), obj[y0:y1, x0:x1].copy(), standalone, "coco", scale
        )
