"""Where Outlier Exposure objects come from: a COCO-style folder, any image folder, or synthesis.

Each source's ``draw`` returns an :class:`OutlierObject`: the object cut to
its bounding box (RGB + boolean mask), ready to be hard-pasted into an inlier
image, and optionally the standalone outlier image at the inlier's size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.images.folder import DatasetError, list_images, read_label_png, read_rgb
from flowclas_ros.data.images.transforms import resize_image
from flowclas_ros.data.outliers.perlin import fractal_noise, perlin_mask
from flowclas_ros.data.outliers.shapes import random_shape_mask

COCO_LAYOUT = "ROOT/images/<stem>.png|jpg plus ROOT/masks/<stem>.png (mask > 0 marks the object)"
FOLDER_LAYOUT = "ROOT/images/*.png|jpg, or *.png|jpg directly in ROOT (no masks needed)"
SYNTHETIC_KINDS = ("perlin", "cutpaste", "shapes")
# Sample images shipped inside scikit-image, used as texture/photo fill when no folder is given.
# The terrain-like textures (moon, gravel) are left out on purpose: outliers should not look like ground.
BUILTIN_TEXTURES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "brick",
    "grass",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "text",
)

InlierPool = Callable[[np.random.Generator], np.ndarray]
"""Returns a random inlier image (uint8 RGB) for cut-paste; the dataset supplies it."""


@dataclass
class OutlierObject:
    """One outlier ready to paste.

    Attributes:
        rgb: uint8 (h, w, 3), the object's bounding-box crop.
        mask: bool (h, w), True on object pixels (the only pixels pasted).
        standalone: (image uint8 (H, W, 3), mask uint8 (H, W) with 1 object,
            0 background, 255 padding) at the inlier's size, or None to let
            the caller paste the object onto the inlier a second time.
        source: Short name of what made it ("coco", "folder", "perlin", ...).
        scale: Rescale factor applied (COCO); 1.0 for sized-by-area sources.
    """

    rgb: np.ndarray
    mask: np.ndarray
    standalone: tuple[np.ndarray, np.ndarray] | None
    source: str
    scale: float = 1.0


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST) > 0


def _box_for_area(
    shape_hw: tuple[int, int], area_range: Sequence[float], rng: np.random.Generator, fill: float
) -> tuple[int, int, float]:
    """A log-uniform target area (pixels) and a box (h, w) that a shape filling ``fill`` of it would cover."""
    lo, hi = np.log(area_range[0]), np.log(area_range[1])
    target = float(np.exp(rng.uniform(lo, hi)) * shape_hw[0] * shape_hw[1])
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    bh = int(np.clip(round(np.sqrt(target / fill * aspect)), 3, shape_hw[0]))
    bw = int(np.clip(round(np.sqrt(target / fill / aspect)), 3, shape_hw[1]))
    return bh, bw, target


def _crop_to_mask(rgb: np.ndarray, mask: np.ndarray, source: str, target_px: float) -> OutlierObject | None:
    """Cuts the object by its bounding box and rescales it so its mask covers ``target_px`` pixels."""
    if not mask.any():
        return None
    y0, y1, x0, x1 = _bbox(mask)
    rgb, mask = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    factor = np.sqrt(target_px / mask.sum())
    if abs(factor - 1) > 0.03:
        size = (max(1, round(mask.shape[0] * factor)), max(1, round(mask.shape[1] * factor)))
        rgb, mask = resize_image(rgb, size), _resize_mask(mask, size)
        if not mask.any():
            return None
    return OutlierObject(np.ascontiguousarray(rgb), mask.copy(), None, source)


def color_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Random brightness, contrast, saturation and hue shift (uint8 RGB in and out)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-18, 18) * strength, 180)
    hsv[..., 1] *= rng.uniform(1 - 0.5 * strength, 1 + 0.5 * strength)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - 0.4 * strength, 1 + 0.4 * strength) + mean
    out *= rng.uniform(1 - 0.35 * strength, 1 + 0.35 * strength)
    return np.clip(out, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def builtin_textures() -> tuple[np.ndarray, ...]:
    """The scikit-image sample images in BUILTIN_TEXTURES as RGB uint8 (loaded once per process)."""
    out = []
    for name in BUILTIN_TEXTURES:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out.append(np.ascontiguousarray(img[:, :, :3]).astype(np.uint8))
    return tuple(out)


def procedural_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random colourful texture: fBm between two colours, stripes or a checker (uint8 RGB)."""
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.integers(3)
    if kind == 0:
        t = fractal_noise((height, width), (rng.uniform(1, 6), rng.uniform(1, 6)), rng, octaves=4)
        t = np.clip(0.5 + 0.3 * t, 0, 1)
    else:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 24)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        if kind == 1:
            t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
        else:
            v = -xx * np.sin(theta) + yy * np.cos(theta)
            t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    return (c1 + t[:, :, None] * (c2 - c1)).astype(np.uint8)


def _random_crop(img: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random (height, width) crop; the image is upscaled first if it is too small."""
    if img.shape[0] < height or img.shape[1] < width:
        factor = max(height / img.shape[0], width / img.shape[1])
        img = resize_image(img, (int(np.ceil(img.shape[0] * factor)), int(np.ceil(img.shape[1] * factor))))
    y = int(rng.integers(0, img.shape[0] - height + 1))
    x = int(rng.integers(0, img.shape[1] - width + 1))
    return img[y : y + height, x : x + width]


def _image_files(root: Path, key: str, layout: str) -> list[Path]:
    if not root.is_dir():
        raise ConfigError(f"{key}: folder {str(root)!r} not found; expected {layout}")
    folder = root / "images" if (root / "images").is_dir() else root
    try:
        files = list(list_images(folder).values())
    except DatasetError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    if not files:
        raise ConfigError(f"{key}: no .png/.jpg images in {str(folder)!r}; expected {layout}")
    return files


class CocoFolderSource:
    """Objects from a COCO-style folder (the Meta-OoD ``ood_seg`` layout FlowCLAS uses).

    An outlier image and its mask are picked at random; the object (mask > 0)
    is cut by its bounding box and rescaled by a factor drawn from ``scales``,
    relative to the outlier image resized to the inlier's area. The standalone
    outlier image is that area-matched image, centre-cropped or padded to the
    inlier size (padding masked 255, as in the official code).

    Args:
        root: Folder with ``images/`` and ``masks/``.
        scales: Rescale factors, e.g. (0.1, 0.125, 0.25, 0.5, 0.75).
        key: Config key named in error messages.

    Raises:
        ConfigError: If the layout is wrong (names ``key`` and the layout).
    """

    def __init__(self, root: str | Path, scales: Sequence[float], key: str = "oe.folder") -> None:
        self.root = Path(root)
        if not str(root):
            raise ConfigError(f"{key}: required for kind 'coco'; expected {COCO_LAYOUT}")
        if not (self.root / "images").is_dir() or not (self.root / "masks").is_dir():
            raise ConfigError(f"{key}: {str(self.root)!r} lacks images/ or masks/; expected {COCO_LAYOUT}")
        self.images = _image_files(self.root, key, COCO_LAYOUT)
        self.masks = [self.root / "masks" / f"{p.stem}.png" for p in self.images]
        missing = [p for p in self.masks if not p.is_file()]
        if missing:
            raise ConfigError(
                f"{key}: {len(missing)} images have no mask, e.g. {missing[0]}; expected {COCO_LAYOUT}"
            )
        if not scales or any(s <= 0 for s in scales):
            raise ConfigError(f"oe.scales: need positive factors, got {list(scales)}")
        self.scales = [float(s) for s in scales]

    def draw(self, inlier: np.ndarray, rng: np.random.Generator, attempts: int = 20) -> OutlierObject:
        """Draws one rescaled object plus the standalone outlier image for an inlier of this shape."""
        h, w = inlier.shape[:2]
        for _ in range(attempts):
            i = int(rng.integers(len(self.images)))
            scale = float(self.scales[rng.integers(len(self.scales))])
            image = read_rgb(self.images[i])
            mask = read_label_png(self.masks[i]) > 0
            if mask.shape != image.shape[:2]:
                raise DatasetError(
                    f"{self.masks[i]}: mask size {mask.shape} differs from image {image.shape[:2]}"
                )
            if not mask.any():
                continue
            fit = np.sqrt(h * w / (image.shape[0] * image.shape[1]))
            y0, y1, x0, x1 = _bbox(mask)
            size = (max(1, round((y1 - y0) * fit * scale)), max(1, round((x1 - x0) * fit * scale)))
            obj_rgb = resize_image(image[y0:y1, x0:x1], size)
            obj_mask = _resize_mask(mask[y0:y1, x0:x1], size)
            if not obj_mask.any():
                continue
            return OutlierObject(obj_rgb, obj_mask, self._standalone(image, mask, fit, (h, w)), "coco", scale)
        raise DatasetError(f"{self.root}: no usable (non-empty) object mask found in {attempts} random draws")

    @staticmethod
    def _standalone(image: np.ndarray, mask: np.ndarray, fit: float, size_hw: tuple[int, int]):
        fh, fw = max(1, round(image.shape[0] * fit)), max(1, round(image.shape[1] * fit))
        image = resize_image(image, (fh, fw))
        label = _resize_mask(mask, (fh, fw)).astype(np.uint8)
        h, w = size_hw
        out_img = np.zeros((h, w, 3), np.uint8)
        out_mask = np.full((h, w), 255, np.uint8)
        sy, sx = max(0, (fh - h) // 2), max(0, (fw - w) // 2)  # centre crop
        dy, dx = max(0, (h - fh) // 2), max(0, (w - fw) // 2)  # centre pad
        ch, cw = min(h, fh), min(w, fw)
        out_img[dy : dy + ch, dx : dx + cw] = image[sy : sy + ch, sx : sx + cw]
        out_mask[dy : dy + ch, dx : dx + cw] = label[sy : sy + ch, sx : sx + cw]
        return out_img, out_mask


class ImageFolderSource:
    """Random-shaped crops (polygon or blob mask) from any folder of images without masks.

    Args:
        root: Folder with ``images/`` or with images directly inside.
        area_range: Object area as a fraction of the inlier, drawn log-uniformly.
        key: Config key named in error messages.
    """

    def __init__(self, root: str | Path, area_range: Sequence[float], key: str = "oe.folder") -> None:
        if not str(root):
            raise ConfigError(f"{key}: required for kind 'folder'; expected {FOLDER_LAYOUT}")
        self.root = Path(root)
        self.images = _image_files(self.root, key, FOLDER_LAYOUT)
        self.area_range = tuple(area_range)

    def draw(self, inlier: np.ndarray, rng: np.random.Generator) -> OutlierObject:
        """Draws one random-shaped crop sized for this inlier."""
        h, w = inlier.shape[:2]
        image = read_rgb(self.images[int(rng.integers(len(self.images)))])
        fit = np.sqrt(h * w / (image.shape[0] * image.shape[1]))
        image = resize_image(
            image, (max(1, round(image.shape[0] * fit)), max(1, round(image.shape[1] * fit)))
        )
        for _ in range(10):
            bh, bw, target = _box_for_area((h, w), self.area_range, rng, fill=0.6)
            crop = _random_crop(image, bh, bw, rng)
            obj = _crop_to_mask(crop, random_shape_mask(bh, bw, rng), "folder", target)
            if obj is not None:
                return obj
        return OutlierObject(crop, np.ones((bh, bw), bool), None, "folder")


class SyntheticSource:
    """CL-flow style synthetic anomalies that need no outlier data.

    A mixture (``weights``) of:

    * ``perlin``: a thresholded fractal-noise mask filled with a texture from
      ``texture_folder`` / the scikit-image samples / a procedural texture;
    * ``cutpaste``: a random rectangle or shape cut from another inlier image
      (``inlier_pool``; else the same image), flipped/rotated, colour-jittered;
    * ``shapes``: a random polygon or blob in a jittered colour with shading.

    Args:
        weights: Mixture weights over SYNTHETIC_KINDS.
        area_range: Object area as a fraction of the inlier, drawn log-uniformly.
        texture_folder: Optional images to fill Perlin masks ('' for none).
        builtin_textures: Also use the scikit-image sample images as fill.
        inlier_pool: Random other inlier for cut-paste, or None.
        key: Config key prefix for error messages.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        area_range: Sequence[float],
        texture_folder: str = "",
        builtin_textures: bool = True,
        inlier_pool: InlierPool | None = None,
        key: str = "oe.synthetic",
    ) -> None:
        unknown = sorted(set(weights) - set(SYNTHETIC_KINDS))
        if unknown:
            raise ConfigError(
                f"{key}.weights: unknown kind(s) {unknown}; choose from {list(SYNTHETIC_KINDS)}"
            )
        probs = np.array([float(weights.get(k, 0.0)) for k in SYNTHETIC_KINDS])
        if (probs < 0).any() or probs.sum() <= 0:
            raise ConfigError(
                f"{key}.weights: need non-negative weights with a positive sum, got {dict(weights)}"
            )
        self.probs = probs / probs.sum()
        self.area_range = tuple(area_range)
        self.textures = (
            _image_files(Path(texture_folder), f"{key}.texture_folder", FOLDER_LAYOUT)
            if texture_folder
            else []
        )
        self.builtin = builtin_textures
        self.inlier_pool = inlier_pool

    def draw(self, inlier: np.ndarray, rng: np.random.Generator) -> OutlierObject:
        """Draws one synthetic object sized for this inlier."""
        kind = SYNTHETIC_KINDS[int(rng.choice(len(SYNTHETIC_KINDS), p=self.probs))]
        h, w = inlier.shape[:2]
        for _ in range(10):
            obj = getattr(self, f"_{kind}")(inlier, rng, h, w)
            if obj is not None:
                return obj
        bh, bw, _ = _box_for_area((h, w), self.area_range, rng, fill=1.0)  # pathological: plain square
        return OutlierObject(procedural_texture(bh, bw, rng), np.ones((bh, bw), bool), None, kind)

    def _texture(self, rng: np.random.Generator, bh: int, bw: int) -> np.ndarray:
        n_files, builtin = len(self.textures), builtin_textures() if self.builtin else ()
        pick = int(rng.integers(n_files + len(builtin) + 1))
        if pick < n_files:
            src = read_rgb(self.textures[pick])
        elif pick < n_files + len(builtin):
            src = builtin[pick - n_files]
        else:
            return procedural_texture(bh, bw, rng)
        return color_jitter(np.ascontiguousarray(_random_crop(src, bh, bw, rng)), rng, 0.6)

    def _perlin(self, inlier, rng, h, w) -> OutlierObject | None:
        bh, bw, target = _box_for_area((h, w), self.area_range, rng, fill=0.5)
        mask = perlin_mask((bh, bw), rng, fraction=0.5, res_range=(1, 3))
        return _crop_to_mask(self._texture(rng, bh, bw), mask, "perlin", target)

    def _cutpaste(self, inlier, rng, h, w) -> OutlierObject | None:
        bh, bw, target = _box_for_area((h, w), self.area_range, rng, fill=0.7)
        src = self.inlier_pool(rng) if self.inlier_pool is not None else inlier
        patch = np.ascontiguousarray(_random_crop(src, bh, bw, rng))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        patch = color_jitter(np.ascontiguousarray(patch), rng, 1.0)
        mask = np.ones((bh, bw), bool) if rng.random() < 0.5 else random_shape_mask(bh, bw, rng)
        return _crop_to_mask(patch, mask, "cutpaste", target)

    def _shapes(self, inlier, rng, h, w) -> OutlierObject | None:
        bh, bw, target = _box_for_area((h, w), self.area_range, rng, fill=0.55)
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 255), rng.uniform(40, 255)]]], np.uint8)
        color = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
        theta = rng.uniform(0, 2 * np.pi)
        ramp = (xx * np.cos(theta) + yy * np.sin(theta)) / max(bh, bw)
        shade = (
            1 + rng.uniform(0, 0.5) * ramp + rng.uniform(0, 0.15) * fractal_noise((bh, bw), (2, 2), rng, 3)
        )
        rgb = np.clip(color * shade[:, :, None] + rng.normal(0, 4, (bh, bw, 3)), 0, 255).astype(np.uint8)
        return _crop_to_mask(rgb, random_shape_mask(bh, bw, rng), "shapes", target)
