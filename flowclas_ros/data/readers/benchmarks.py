"""Public anomaly-segmentation benchmarks in their released layouts (``flowclas-eval --dataset NAME``).

Each reader lists image / label files in the benchmark's own layout and maps its label ids
onto ours (0 normal, 1 anomaly, 255 ignore); the images are scored at their native size (the
checkpoint's preprocessing decides any resize) and the labels are never resized. The layouts
and conventions, checked against the FlowCLAS authors' readers (TRAILab/FlowCLAS
``src/core/data/{roadanomaly,fishyscapes,smiyc,allo}.py`` at e451e6c):

- ``road_anomaly`` (Lis et al.): ``ROOT/frames/<stem>.jpg`` and
  ``ROOT/frames/<stem>.labels/labels_semantic.png``; raw 2 = anomaly -> 1; 0, 1 and 255 are kept
  (their reader does the same; the released labels use 0 and 2).
- ``fishyscapes_lf`` (Fishyscapes Lost & Found validation, 100 images): images and labels with
  the same file name, labels 0 normal / 1 anomaly / 255 void, unchanged. Two released layouts are
  read: the authors' ``ROOT/images/*.png`` + ``ROOT/labels/*.png``, and the one PEBAL, RPL and
  Meta-OoD read, ``ROOT[/LostAndFound]/original/*.png`` + ``labels/*.png``.
- ``smiyc`` (SegmentMeIfYouCan RoadAnomaly21 / RoadObstacle21): ROOT is a track folder
  (``dataset_AnomalyTrack`` / ``dataset_ObstacleTrack``, or their parent holding exactly one):
  ``images/<stem>.{jpg,webp}`` + ``labels_masks/<stem>_labels_semantic.png``, 0 normal, 1 anomaly,
  255 void, unchanged. Only labelled images are read (the public test images have no labels;
  the authors read ``validation*``).
- ``allo``: ROOT is a split folder (e.g. ``ALLO/test_v3``): ``**/images/*.png``, the mask at the
  same path with the ``images`` folder replaced by ``masks``; semantic ids 0..7 normal -> 0,
  8 anomaly -> 1, 255 ignore; any other id is an error (the authors assert the same set).
- ``mvtec`` (MVTec AD): ROOT is a category folder: ``test/<defect>/*.png`` +
  ``ground_truth/<defect>/<stem>_mask.png`` (255 -> 1); ``good`` images get an all-normal mask.

1-bit PNG masks (PIL mode ``1``) are read as 0 / 1 before the mapping, so a set pixel is an
anomaly (label 1), never void. The authors' ``PIL convert("L")`` would turn them into 0 / 255,
which their metrics treat as void; readers count such masks (``n_one_bit_masks``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from flowclas_ros.data.images.folder import DatasetError, FolderDataset, list_images

ONE_BIT_NOTE = "1-bit PNG masks: set pixels = anomaly (1), clear = normal (0)"


class FileListDataset(FolderDataset):
    """A :class:`FolderDataset` over explicit image / mask file lists (subsets, other layouts).

    Args:
        root: Reported as the dataset root.
        image_paths: Image files.
        mask_paths: Mask file per image, or None.
        label_map: Raw mask id -> {0, 1, 255}.
        default_label: Output id for raw ids not in ``label_map`` (None keeps them).
        zero_mask_if_missing: ``load_mask`` returns an all-normal mask for
            images without a mask file (MVTec ``good`` test images).
        stems: Item names (default: the image file stems); must be unique.
    """

    def __init__(
        self,
        root: Path,
        image_paths: Sequence[Path],
        mask_paths: Sequence[Path | None],
        label_map: dict[int, int] | None = None,
        default_label: int | None = None,
        zero_mask_if_missing: bool = False,
        stems: Sequence[str] | None = None,
    ):
        # Fills the attributes FolderDataset's loaders use, without its folder scan.
        self.root = Path(root)
        self.image_paths = list(image_paths)
        self.mask_paths = list(mask_paths)
        self.stems = list(stems) if stems is not None else [p.stem for p in self.image_paths]
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
        self.default_label = default_label
        self.zero_mask_if_missing = zero_mask_if_missing
        self.n_one_bit_masks = 0

    @property
    def has_masks(self) -> bool:
        """True if every image has a mask (or gets a zero one)."""
        return self.zero_mask_if_missing or super().has_masks

    def load_mask(self, index: int, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """The mask, or zeros of the image's size when missing and ``zero_mask_if_missing``."""
        path = self.mask_paths[index]
        if path is None and self.zero_mask_if_missing:
            shape = shape or self.load_image(index).shape[:2]
            return np.zeros(shape, np.uint8)
        if path is not None and path.suffix.lower() == ".png":
            try:
                with Image.open(path) as img:  # header only
                    self.n_one_bit_masks += img.mode == "1"
            except OSError:
                pass  # reported by the loader below, naming the file
        return super().load_mask(index, shape)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark reader.

    Attributes:
        name: ``--dataset`` value.
        layout: Expected layout, for errors and metrics.json.
        convention: The label mapping applied, for metrics.json and the report.
        open: ``ROOT -> FileListDataset``; raises DatasetError naming the path.
    """

    name: str
    layout: str
    convention: str
    open: Callable[[Path], FileListDataset]


def _need_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: folder not found; expected {layout}")
    return path


def _pairs(root: Path, images: list[Path], masks: list[Path], layout: str, **kwargs: Any) -> FileListDataset:
    """A dataset of images whose masks all exist (else one error naming the count and the first)."""
    if not images:
        raise DatasetError(f"{root}: no images found; expected {layout}")
    missing = [m for m in masks if not m.is_file()]
    if missing:
        raise DatasetError(
            f"{missing[0]}: label file not found ({len(missing)} of {len(images)} missing); expected {layout}"
        )
    return FileListDataset(root, images, masks, **kwargs)


ROAD_ANOMALY_LAYOUT = "ROOT/frames/<stem>.jpg and ROOT/frames/<stem>.labels/labels_semantic.png"


def open_road_anomaly(root: Path) -> FileListDataset:
    """Road Anomaly: raw 2 -> 1 (anomaly); 0, 1 and 255 kept."""
    frames = _need_dir(root / "frames", ROAD_ANOMALY_LAYOUT)
    images = sorted(p for p in frames.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")
    masks = [frames / f"{p.stem}.labels" / "labels_semantic.png" for p in images]
    return _pairs(root, images, masks, ROAD_ANOMALY_LAYOUT, label_map={2: 1})


FISHYSCAPES_LAYOUT = (
    "ROOT/images/<name>.png + ROOT/labels/<name>.png (the authors'), "
    "or ROOT[/LostAndFound]/original/<name>.png + labels/<name>.png (PEBAL / RPL)"
)


def open_fishyscapes_lf(root: Path) -> FileListDataset:
    """Fishyscapes Lost & Found: labels 0 / 1 / 255 as released."""
    base = root / "LostAndFound" if (root / "LostAndFound").is_dir() else root
    image_dir = next((base / d for d in ("images", "original") if (base / d).is_dir()), None)
    if image_dir is None or not (base / "labels").is_dir():
        raise DatasetError(
            f"{base}: no images/ (or original/) and labels/ folders; expected {FISHYSCAPES_LAYOUT}"
        )
    images = list(list_images(image_dir).values())
    masks = [base / "labels" / f"{p.stem}.png" for p in images]
    return _pairs(root, images, masks, FISHYSCAPES_LAYOUT)


SMIYC_LAYOUT = (
    "ROOT = dataset_AnomalyTrack or dataset_ObstacleTrack (or a folder holding one of them): "
    "images/<stem>.jpg|webp + labels_masks/<stem>_labels_semantic.png"
)
SMIYC_TRACKS = ("dataset_AnomalyTrack", "dataset_ObstacleTrack")


def open_smiyc(root: Path) -> FileListDataset:
    """SMIYC RoadAnomaly21 / RoadObstacle21: the labelled images; labels 0 / 1 / 255 as released."""
    tracks = [root / t for t in SMIYC_TRACKS if (root / t).is_dir()]
    if len(tracks) > 1:
        raise DatasetError(f"{root}: holds both SMIYC tracks; pass one of {', '.join(map(str, tracks))}")
    track = tracks[0] if tracks else root
    image_dir = _need_dir(track / "images", SMIYC_LAYOUT)
    label_dir = _need_dir(track / "labels_masks", SMIYC_LAYOUT)
    images, masks = [], []
    for path in sorted(image_dir.iterdir()):
        label = label_dir / f"{path.stem}_labels_semantic.png"
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and label.is_file():
            images.append(path)
            masks.append(label)
    if not images:
        raise DatasetError(f"{track}: no image has a label in labels_masks/; expected {SMIYC_LAYOUT}")
    return FileListDataset(track, images, masks)


ALLO_LAYOUT = (
    "ROOT = an ALLO split folder (e.g. test_v3): **/images/*.png with the masks in the sibling masks/ folders"
)


def open_allo(root: Path) -> FileListDataset:
    """ALLO: semantic ids 0..7 -> 0, 8 -> 1 (anomaly), 255 ignore; other ids are an error."""
    _need_dir(root, ALLO_LAYOUT)
    images = sorted(p for p in root.glob("**/images/*.png") if p.is_file())
    masks = [p.parent.parent / "masks" / p.name for p in images]
    # Names: the path below ROOT without the images/ folder (file names repeat across scenes).
    stems = ["/".join((*p.relative_to(root).parent.parent.parts, p.stem)) for p in images]
    label_map = {**{i: 0 for i in range(8)}, 8: 1, 255: 255}
    return _pairs(root, images, masks, ALLO_LAYOUT, label_map=label_map, stems=stems)


MVTEC_LAYOUT = (
    "an MVTec AD category folder: CATEGORY/train/good/*.png, CATEGORY/test/<defect>/*.png, "
    "CATEGORY/ground_truth/<defect>/<stem>_mask.png"
)


def open_mvtec(category: Path, split: str = "test") -> FileListDataset:
    """MVTec AD ``train`` (``train/good``) or ``test`` (all defects; masks 255 -> 1, good -> zeros)."""
    split_dir = _need_dir(category / split, MVTEC_LAYOUT)
    defects = ["good"] if split == "train" else sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    images: list[Path] = []
    masks: list[Path | None] = []
    stems: list[str] = []
    for defect in defects:
        for stem, path in list_images(_need_dir(split_dir / defect, MVTEC_LAYOUT)).items():
            mask = category / "ground_truth" / defect / f"{stem}_mask.png"
            images.append(path)
            masks.append(mask if mask.is_file() else None)
            stems.append(f"{defect}_{stem}")  # MVTec numbers files per defect folder
    if not images:
        raise DatasetError(f"{split_dir}: no images found; expected {MVTEC_LAYOUT}")
    return FileListDataset(category, images, masks, {255: 1}, None, split == "test", stems)


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark(
            "road_anomaly",
            ROAD_ANOMALY_LAYOUT,
            "raw 2 -> 1 anomaly; 0 normal, 1 and 255 kept",
            open_road_anomaly,
        ),
        Benchmark(
            "fishyscapes_lf",
            FISHYSCAPES_LAYOUT,
            "as released: 0 normal, 1 anomaly, 255 void",
            open_fishyscapes_lf,
        ),
        Benchmark("smiyc", SMIYC_LAYOUT, "as released: 0 normal, 1 anomaly, 255 void", open_smiyc),
        Benchmark(
            "allo", ALLO_LAYOUT, "semantic ids 0..7 -> 0 normal, 8 -> 1 anomaly, 255 ignore", open_allo
        ),
        Benchmark(
            "mvtec", MVTEC_LAYOUT, "mask 255 -> 1 anomaly, 0 normal; good images all normal", open_mvtec
        ),
    )
}
"""``--dataset`` name -> reader (the registry; add one with :func:`register_benchmark`)."""


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    """Adds a reader under ``benchmark.name``; ``flowclas-eval --dataset`` offers it from then on.

    Raises:
        ValueError: The name is taken.
    """
    if benchmark.name in BENCHMARKS:
        raise ValueError(f"--dataset {benchmark.name!r} is registered already")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def unregister_benchmark(name: str) -> None:
    """Removes a reader (tests that register a dummy one clean up with this)."""
    BENCHMARKS.pop(name, None)


def open_benchmark(name: str, root: str | Path) -> tuple[FileListDataset, Benchmark]:
    """Opens ROOT with the named reader.

    Raises:
        DatasetError: Unknown name (the message lists them), or ROOT not in the benchmark's layout.
    """
    if name not in BENCHMARKS:
        raise DatasetError(f"unknown --dataset {name!r}; one of: {', '.join(BENCHMARKS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    benchmark = BENCHMARKS[name]
    return benchmark.open(root), benchmark
