"""Image folders (docs/ARCHITECTURE.md layout): ``ROOT/images/<stem>.{png,jpg}`` + ``ROOT/masks/<stem>.png``.

Masks are single channel: 0 = normal, 1 = anomaly, 255 = ignore. Datasets whose
masks use other ids (e.g. ALLO: semantic ids, 8 = anomaly, 255 = ignore) are read
through a ``label_map``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MASK_VALUES = (0, 1, 255)
IGNORE_LABEL = 255
LAYOUT_HINT = (
    "expected ROOT/images/<stem>.png|jpg and optional ROOT/masks/<stem>.png (0 normal, 1 anomaly, 255 ignore)"
)


class DatasetError(ValueError):
    """A dataset folder or file is missing or malformed. The message names the path."""


@dataclass
class Sample:
    """One dataset item.

    Attributes:
        image: RGB uint8 array (H, W, 3).
        mask: uint8 (H, W) with values in {0, 1, 255}, or None when the item has no mask.
        stem: File name without extension, shared by image and mask.
    """

    image: np.ndarray
    mask: np.ndarray | None
    stem: str


def read_rgb(path: str | Path) -> np.ndarray:
    """Reads an image file as RGB uint8 (H, W, 3); grey and RGBA are converted.

    Raises:
        DatasetError: If the file cannot be decoded.
    """
    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if data is None:
        raise DatasetError(f"{path}: cannot read image (missing, unreadable or not an image)")
    return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | Path, image: np.ndarray) -> None:
    """Writes an RGB uint8 image (PNG or JPEG by suffix)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise DatasetError(f"{path}: cannot write image")


def read_label_png(path: str | Path) -> np.ndarray:
    """Reads a single-channel label image as int32 (H, W) without value changes.

    Read with Pillow (a dependency of imageio/matplotlib) rather than OpenCV
    because OpenCV expands palette PNGs to colours, losing the label ids. A
    3-channel file is accepted only if all channels are equal.

    Raises:
        DatasetError: If unreadable or truly multi-channel.
    """
    try:
        with Image.open(path) as img:
            data = np.asarray(img)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read mask ({exc})") from exc
    if data.ndim == 3:
        data = data[:, :, :3]
        if not (
            np.array_equal(data[:, :, 0], data[:, :, 1]) and np.array_equal(data[:, :, 0], data[:, :, 2])
        ):
            raise DatasetError(f"{path}: mask must be single channel, got {data.shape[2]} different channels")
        data = data[:, :, 0]
    return data.astype(np.int32)


def apply_label_map(
    raw: np.ndarray, label_map: Mapping[int, int] | None, default_label: int | None = None
) -> np.ndarray:
    """Maps raw label ids to {0, 1, 255}.

    Args:
        raw: Integer label image.
        label_map: raw id -> output id. Ids not in the map keep their value, or
            become ``default_label`` when that is set.
        default_label: Output id for ids missing from ``label_map``.

    Returns:
        The mapped int32 label image (not yet validated).
    """
    if not label_map and default_label is None:
        return raw
    out = np.full_like(raw, default_label) if default_label is not None else raw.copy()
    for src, dst in (label_map or {}).items():
        out[raw == int(src)] = int(dst)
    return out


def list_images(folder: Path) -> dict[str, Path]:
    """Returns ``{stem: path}`` for the image files in ``folder``, sorted by stem.

    Raises:
        DatasetError: If two files share a stem (e.g. ``a.png`` and ``a.jpg``).
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in found:
                raise DatasetError(
                    f"{folder}: two images share the stem {path.stem!r}: {found[path.stem].name}, {path.name}"
                )
            found[path.stem] = path
    return dict(sorted(found.items()))


class FolderDataset:
    """Images and optional masks in the docs/ARCHITECTURE.md folder layout, in sorted stem order.

    Args:
        root: Dataset root holding ``images/`` and optionally ``masks/``.
        require_masks: If True, every image must have a mask (evaluation sets).
        label_map: Raw mask id -> {0, 1, 255}; keys may be ints or strings of
            ints (as YAML/JSON configs give them). ALLO: ``{8: 1, 255: 255}``
            with ``default_label=0``.
        default_label: Output id for raw ids not in ``label_map`` (None keeps them).

    Raises:
        DatasetError: On a missing ``images/`` folder, no images, or (with
            ``require_masks``) a missing mask. Mask size and value problems are
            raised when the item is loaded, naming the file.
    """

    def __init__(
        self,
        root: str | Path,
        require_masks: bool = False,
        label_map: Mapping[int | str, int] | None = None,
        default_label: int | None = None,
    ) -> None:
        self.root = Path(root)
        images_dir = self.root / "images"
        if not images_dir.is_dir():
            raise DatasetError(f"{images_dir}: folder not found; {LAYOUT_HINT}")
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
        self.default_label = default_label
        images = list_images(images_dir)
        if not images:
            raise DatasetError(f"{images_dir}: no .png/.jpg images found; {LAYOUT_HINT}")
        self.stems = list(images)
        self.image_paths = list(images.values())
        masks_dir = self.root / "masks"
        self.mask_paths: list[Path | None] = []
        for stem in self.stems:
            mask_path = masks_dir / f"{stem}.png"
            self.mask_paths.append(mask_path if mask_path.is_file() else None)
        if require_masks:
            missing = [s for s, m in zip(self.stems, self.mask_paths) if m is None]
            if missing:
                raise DatasetError(
                    f"{masks_dir}: {len(missing)} of {len(self.stems)} images have no mask, "
                    f"e.g. {missing[0]}.png; {LAYOUT_HINT}"
                )

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def has_masks(self) -> bool:
        """True if every image has a mask."""
        return all(m is not None for m in self.mask_paths)

    def load_image(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) of item ``index``."""
        return read_rgb(self.image_paths[index])

    def load_mask(self, index: int, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """Mask of item ``index`` mapped to {0, 1, 255} as uint8, or None if it has none.

        Args:
            index: Item index.
            shape: Expected (H, W), normally the image's; checked when given.

        Raises:
            DatasetError: If the size differs from ``shape`` or values fall
                outside {0, 1, 255} after the label map.
        """
        path = self.mask_paths[index]
        if path is None:
            return None
        mask = apply_label_map(read_label_png(path), self.label_map, self.default_label)
        if shape is not None and mask.shape != tuple(shape):
            raise DatasetError(
                f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from "
                f"image size {shape[1]}x{shape[0]}"
            )
        bad = np.setdiff1d(np.unique(mask), MASK_VALUES)
        if bad.size:
            hint = " (use label_map to map raw ids)" if not self.label_map else ""
            raise DatasetError(f"{path}: mask values {bad[:8].tolist()} are outside {{0, 1, 255}}{hint}")
        return mask.astype(np.uint8)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        image = self.load_image(index)
        return Sample(image=image, mask=self.load_mask(index, image.shape[:2]), stem=self.stems[index])
