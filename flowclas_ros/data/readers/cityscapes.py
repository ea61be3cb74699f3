"""Cityscapes in its official layout: ``leftImg8bit`` frames with ``gtFine`` label ids as 19 train ids.

Layout (the official release, unchanged)::

    ROOT/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png

The label-id -> train-id table is the one of the official ``cityscapesScripts``
(``cityscapesscripts/helpers/labels.py``, v2.3.0, lines 71-98: the 19 classes
with ``trainId`` 0..18, everything else 255). The FlowCLAS authors use the same
table (``src/core/data/cityscapes_coco.py`` ``CLASS_INDICES`` / ``VOID_INDICES``).
It is written out here rather than importing ``cityscapesscripts``: that
package's requirements pull in the ``typing`` 3.7 backport (and requests,
pyquaternion, coloredlogs, appdirs), and the backport shadows the standard
library's ``typing`` when site-packages comes first on ``sys.path`` (as under
colcon's PYTHONPATH), all for a 35-row table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowclas_ros.data.images.folder import IGNORE_LABEL, DatasetError, FolderDataset, read_label_png

# labelId -> trainId for the 19 evaluated classes (road ... bicycle); all other ids are void (255).
LABEL_TO_TRAIN = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
NUM_TRAIN_CLASSES = 19
CITYSCAPES_LAYOUT = (
    "expected the official Cityscapes layout: ROOT/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png "
    "and ROOT/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png"
)

_LUT = np.full(256, IGNORE_LABEL, np.uint8)
for _label, _train in LABEL_TO_TRAIN.items():
    _LUT[_label] = _train


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps a ``gtFine_labelIds`` image to train ids 0..18 (uint8), void and unknown ids to 255."""
    ids = np.asarray(label_ids)
    if ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
        raise ValueError(f"label ids must be in 0..255, got {ids.min()}..{ids.max()}")
    return _LUT[ids.astype(np.int64)]


class CityscapesDataset(FolderDataset):
    """One split of Cityscapes with semantic train ids.

    ``load_mask`` gives the inlier mask the flow trains on: 0 where the pixel
    has one of the 19 classes, 255 (ignored) on void pixels, as the official
    training step does (every id but the outlier and ignore ids -> inlier).
    ``load_semantic`` gives the train ids for the segmentation head.

    Args:
        root: The Cityscapes root.
        split: ``train``, ``val`` or ``test``.
        key: Config key named in error messages.

    Raises:
        DatasetError: When ``leftImg8bit/<split>`` or ``gtFine/<split>`` is
            missing, empty, or an image has no label file (names the folder).
    """

    def __init__(self, root: str | Path, split: str = "train", key: str = "data.train") -> None:
        # Fills the attributes FolderDataset's helpers use, without its folder scan.
        self.root = Path(root)
        self.label_map: dict[int, int] = {}
        self.default_label = None
        for sub in ("leftImg8bit", "gtFine"):
            folder = self.root / sub / split
            if not folder.is_dir():
                raise DatasetError(f"{key}: folder {str(folder)!r} not found; {CITYSCAPES_LAYOUT}")
        images = sorted((self.root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetError(
                f"{key}: no *_leftImg8bit.png under {str(self.root / 'leftImg8bit' / split)!r}; "
                f"{CITYSCAPES_LAYOUT}"
            )
        self.image_paths = images
        self.stems = [p.name[: -len("_leftImg8bit.png")] for p in images]
        self.label_paths = [
            self.root / "gtFine" / split / p.parent.name / f"{stem}_gtFine_labelIds.png"
            for p, stem in zip(images, self.stems)
        ]
        missing = [p for p in self.label_paths if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{key}: {len(missing)} of {len(images)} images have no gtFine labelIds file, "
                f"e.g. {missing[0]}; {CITYSCAPES_LAYOUT}"
            )
        self.mask_paths = list(self.label_paths)

    @property
    def has_masks(self) -> bool:
        """True: every image has a label file (checked on construction)."""
        return True

    def load_semantic(self, index: int, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Train ids (uint8 (H, W), 0..18, void 255) of item ``index``."""
        path = self.label_paths[index]
        raw = read_label_png(path)
        if shape is not None and raw.shape != tuple(shape):
            raise DatasetError(f"{path}: label size {raw.shape[::-1]} differs from image size {shape[::-1]}")
        try:
            return label_ids_to_train_ids(raw)
        except ValueError as exc:
            raise DatasetError(f"{path}: {exc}") from exc

    def load_mask(self, index: int, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Inlier mask (uint8): 0 on the 19 classes, 255 on void."""
        semantic = self.load_semantic(index, shape)
        return np.where(semantic == IGNORE_LABEL, IGNORE_LABEL, 0).astype(np.uint8)
