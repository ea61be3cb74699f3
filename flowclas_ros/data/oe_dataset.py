"""Torch dataset for FlowCLAS training: inlier images with Outlier Exposure, model-ready.

Design: each inlier is resized to the model input size first and OE runs at
that size, so masks are exact at model resolution (no mask resampling after
pasting). Images are normalised with :func:`flowclas_ros.data.transforms.to_model_input`,
the same code every inference backend uses.

Randomness: sample ``i`` in epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])``.
That makes a sample independent of which DataLoader worker loads it and of
the worker count, and lets a resumed run reproduce the same stream (call
:meth:`OETrainDataset.set_epoch` before creating each epoch's iterator).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from flowclas_ros.data.folder import IGNORE_LABEL, FolderDataset
from flowclas_ros.data.outlier_exposure import OEConfig, OutlierExposure
from flowclas_ros.data.transforms import resize_image, to_model_input
from flowclas_ros.model.config import PreprocessConfig


class OETrainDataset(Dataset):
    """Inlier images with Outlier Exposure for the training loop.

    Args:
        data: A :class:`FolderDataset` or its root folder (masks optional; a
            mask's 255 pixels stay ignored, its 1 pixels count as anomalies).
        oe: OE settings or a ready :class:`OutlierExposure`. Built from a config,
            cut-paste draws its patches from other images of ``data``.
        preprocess: Model input size and normalisation.
        seed: Base seed of the per-sample random streams.
        hflip: Randomly mirror inliers horizontally (augmentation).
        vary_per_epoch: If False the samples ignore the epoch (a fixed OE
            validation set).

    Each item is a dict of tensors (default collate works):
        ``mixed`` float32 (3, H, W) normalised; ``mask`` uint8 (H, W): 0 inlier,
        1 pasted outlier (or anomaly in the inlier's own mask), 255 ignore;
        ``outlier`` float32 (3, H, W) normalised standalone outlier image;
        ``outlier_mask`` uint8 (H, W): 1 object, 0 other, 255 ignore;
        ``applied`` bool (OE applied); ``index`` int64.
    """

    def __init__(
        self,
        data: FolderDataset | str | Path,
        oe: OEConfig | OutlierExposure,
        preprocess: PreprocessConfig,
        seed: int = 0,
        hflip: bool = True,
        vary_per_epoch: bool = True,
    ) -> None:
        self.data = data if isinstance(data, FolderDataset) else FolderDataset(data)
        self.preprocess = preprocess
        self.size = tuple(int(s) for s in preprocess.input_size)
        self.oe = (
            oe if isinstance(oe, OutlierExposure) else OutlierExposure(oe, inlier_pool=self._random_inlier)
        )
        self.seed = int(seed)
        self.hflip = hflip
        self.vary_per_epoch = vary_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the random stream of ``epoch`` (call before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.data)

    def load_inlier(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image (uint8 RGB) and mask (uint8 or None) of item ``index``, resized to the input size."""
        image = self.data.load_image(index)
        mask = self.data.load_mask(index, image.shape[:2])
        image = np.ascontiguousarray(resize_image(image, self.size))
        if mask is not None and mask.shape != self.size:
            mask = cv2.resize(mask, (self.size[1], self.size[0]), interpolation=cv2.INTER_NEAREST)
        return image, mask

    def _random_inlier(self, rng: np.random.Generator) -> np.ndarray:
        return self.load_inlier(int(rng.integers(len(self.data))))[0]

    def rng_for(self, index: int) -> np.random.Generator:
        """The random stream of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch if self.vary_per_epoch else 0, int(index)])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self.rng_for(index)
        image, inlier_mask = self.load_inlier(index)
        if self.hflip and rng.random() < 0.5:
            image = np.ascontiguousarray(image[:, ::-1])
            inlier_mask = None if inlier_mask is None else np.ascontiguousarray(inlier_mask[:, ::-1])
        sample = self.oe(image, rng)
        mask = sample.paste_mask.copy()
        if inlier_mask is not None:
            keep = sample.paste_mask == 0  # pasted pixels override the inlier's own labels
            mask[keep & (inlier_mask == IGNORE_LABEL)] = IGNORE_LABEL
            mask[keep & (inlier_mask == 1)] = 1
        pixels = torch.from_numpy(to_model_input([sample.mixed, sample.outlier_image], self.preprocess))
        return {
            "mixed": pixels[0],
            "mask": torch.from_numpy(mask),
            "outlier": pixels[1],
            "outlier_mask": torch.from_numpy(np.ascontiguousarray(sample.outlier_mask)),
            "applied": torch.tensor(sample.applied),
            "index": torch.tensor(index, dtype=torch.int64),
        }
