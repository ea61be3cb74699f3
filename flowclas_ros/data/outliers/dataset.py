"""Torch dataset for FlowCLAS training: inlier images with Outlier Exposure, model-ready.

Design: each inlier is resized to the model input size first (or, with
``crop``, randomly cropped at native scale as the official recipes do) and OE
runs at that size, so masks are exact at model resolution (no mask resampling
after pasting). Images are normalised with :func:`flowclas_ros.data.images.transforms.to_model_input`,
the same code every inference backend uses.

Randomness: sample ``i`` in epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])``.
That makes a sample independent of which DataLoader worker loads it and of
the worker count, and lets a resumed run reproduce the same stream (call
:meth:`OETrainDataset.set_epoch` before creating each epoch's iterator).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from flowclas_ros.data.images.folder import IGNORE_LABEL, FolderDataset
from flowclas_ros.data.images.transforms import resize_image, to_model_input
from flowclas_ros.data.outliers.coco import pad_center_crop
from flowclas_ros.data.outliers.exposure import OEConfig, OutlierExposure
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
        vflip: Randomly mirror inliers vertically (official ALLO recipe).
        crop: Native-scale random crop (height, width) instead of the resize;
            smaller images are padded first (centred, RGB 0, mask 255).
        semantic: Also return ``semantic`` (the dataset's ``load_semantic``
            train ids; pasted outliers and padding 255) for a segmentation head.

    Each item is a dict of tensors (default collate works):
        ``mixed`` float32 (3, H, W) normalised; ``mask`` uint8 (H, W): 0 inlier,
        1 pasted outlier (or anomaly in the inlier's own mask), 255 ignore;
        ``outlier`` float32 (3, H, W) normalised standalone outlier image;
        ``outlier_mask`` uint8 (H, W): 1 object, 0 other, 255 ignore;
        ``applied`` bool (OE applied); ``index`` int64; ``semantic`` uint8 (H, W)
        when ``semantic`` is set.
    """

    def __init__(
        self,
        data: FolderDataset | str | Path,
        oe: OEConfig | OutlierExposure,
        preprocess: PreprocessConfig,
        seed: int = 0,
        hflip: bool = True,
        vary_per_epoch: bool = True,
        vflip: bool = False,
        crop: tuple[int, int] | None = None,
        semantic: bool = False,
    ) -> None:
        self.data = data if isinstance(data, FolderDataset) else FolderDataset(data)
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        if self.crop is not None:  # native scale: normalise at the crop size, never resize
            preprocess = dataclasses.replace(preprocess, input_size=self.crop)
        self.preprocess = preprocess
        self.size = tuple(int(s) for s in preprocess.input_size)
        if semantic and not hasattr(self.data, "load_semantic"):
            raise ValueError("semantic labels need a dataset with load_semantic (data.layout: cityscapes)")
        self.semantic = semantic
        self.vflip = vflip
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
        """Image (uint8 RGB) and mask (uint8 or None) of ``index``, at the input size (native with crop)."""
        image = self.data.load_image(index)
        mask = self.data.load_mask(index, image.shape[:2])
        if self.crop is not None:
            return image, mask
        image = np.ascontiguousarray(resize_image(image, self.size))
        if mask is not None and mask.shape != self.size:
            mask = cv2.resize(mask, (self.size[1], self.size[0]), interpolation=cv2.INTER_NEAREST)
        return image, mask

    def _random_inlier(self, rng: np.random.Generator) -> np.ndarray:
        return self.load_inlier(int(rng.integers(len(self.data))))[0]

    def rng_for(self, index: int) -> np.random.Generator:
        """The random stream of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch if self.vary_per_epoch else 0, int(index)])

    def _random_crop(
        self, image: np.ndarray, labels: list[np.ndarray], rng: np.random.Generator
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Pads (centred) to at least the crop size, then takes a uniform random crop."""
        ch, cw = self.crop
        h, w = image.shape[:2]
        if h < ch or w < cw:
            size = (max(h, ch), max(w, cw))
            padded = [pad_center_crop(image, lab, size) for lab in labels or [np.zeros((h, w), np.uint8)]]
            image, labels = padded[0][0], [lab for _, lab in padded][: len(labels)]
            h, w = image.shape[:2]
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = (slice(y, y + ch), slice(x, x + cw))
        return np.ascontiguousarray(image[crop]), [np.ascontiguousarray(lab[crop]) for lab in labels]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self.rng_for(index)
        image, inlier_mask = self.load_inlier(index)
        labels = [] if inlier_mask is None else [inlier_mask]
        if self.semantic:
            labels.append(self.data.load_semantic(index, image.shape[:2]))
        # Official order: flips, then the crop.
        if self.hflip and rng.random() < 0.5:
            image, labels = image[:, ::-1], [lab[:, ::-1] for lab in labels]
        if self.vflip and rng.random() < 0.5:
            image, labels = image[::-1], [lab[::-1] for lab in labels]
        if self.crop is not None:
            image, labels = self._random_crop(image, labels, rng)
        image, labels = np.ascontiguousarray(image), [np.ascontiguousarray(lab) for lab in labels]
        semantic = labels.pop() if self.semantic else None
        inlier_mask = labels[0] if labels else None
        sample = self.oe(image, rng)
        mask = sample.paste_mask.copy()
        if inlier_mask is not None:
            keep = sample.paste_mask == 0  # pasted pixels override the inlier's own labels
            mask[keep & (inlier_mask == IGNORE_LABEL)] = IGNORE_LABEL
            mask[keep & (inlier_mask == 1)] = 1
        pixels = torch.from_numpy(to_model_input([sample.mixed, sample.outlier_image], self.preprocess))
        item = {
            "mixed": pixels[0],
            "mask": torch.from_numpy(mask),
            "outlier": pixels[1],
            "outlier_mask": torch.from_numpy(np.ascontiguousarray(sample.outlier_mask)),
            "applied": torch.tensor(sample.applied),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if semantic is not None:  # official seg target: the mix's labels with the outliers ignored
            item["semantic"] = torch.from_numpy(
                np.where(sample.paste_mask > 0, IGNORE_LABEL, semantic).astype(np.uint8)
            )
        return item
