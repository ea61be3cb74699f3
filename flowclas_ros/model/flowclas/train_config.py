"""FlowCLAS's training settings: the ``loss`` and ``seg`` sections of the training config (no torch).

They live beside the objective that reads them (``objective.py``); ``training/config.py``
puts them into ``TrainConfig`` under the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class LossConfig:
    """``L = alpha * NLL + L_con``.

    Attributes:
        alpha: Weight of the NLL (summed over inlier cells of the mixed image;
            unnormalised, hence small; official default 1e-6).
        nll_reduction: ``sum`` (per image, the official scale) or ``mean`` (per cell and channel).
        temperature: SupCon temperature.
        anchors_outlier: Most pasted-outlier cells of the mixed images used as anchors (whole batch).
        anchors_inlier: Most inlier cells of the mixed images used as anchors.
        contrast_outlier: Most object cells of the standalone outlier images added to the contrast set.
        contrast_inlier: Most non-object cells of the standalone outlier images added to the contrast set.
        sampling: ``independent``: each of the four sets above is capped on its own.
            ``balanced`` (official): one N = min(``max_views``, #pasted, #inlier,
            #outlier-image object, #outlier-image background) cells of each set
            (the background term is left out when all of it is ignored).
        max_views: Upper bound of N for ``balanced`` sampling (official 512).
        anchor_mean: ``with_positives``: the contrastive loss averages over
            anchors that have a positive. ``all`` (official): over every anchor,
            one without positives counting 0.
    """

    alpha: float = 1e-6
    nll_reduction: Literal["sum", "mean"] = "sum"
    temperature: float = 0.1
    anchors_outlier: int = 512
    anchors_inlier: int = 512
    contrast_outlier: int = 512
    contrast_inlier: int = 512
    sampling: Literal["independent", "balanced"] = "independent"
    max_views: int = 512
    anchor_mean: Literal["with_positives", "all"] = "with_positives"

    def __post_init__(self) -> None:
        if self.max_views < 1:
            raise ValueError(f"max_views must be >= 1, got {self.max_views}")
        if self.alpha < 0 or self.temperature <= 0:
            raise ValueError("alpha must be >= 0 and temperature > 0")
        counts = (self.anchors_outlier, self.anchors_inlier, self.contrast_outlier, self.contrast_inlier)
        if min(counts) < 0:
            raise ValueError("anchor / contrast counts must be >= 0")


@dataclass
class SegConfig:
    """Segmentation head on the flow latent z (official Cityscapes recipe; training only).

    A 3x3 conv (C -> C/2), BatchNorm, ReLU and a 1x1 conv to ``num_classes``
    logits, upsampled bilinearly to the crop and trained with
    ``ce_weight * CE + lovasz_weight * Lovasz-softmax`` on the Cityscapes train
    ids of the mixed image (pasted outliers and void ignored). Needs
    ``data.layout: cityscapes``. Not part of the inference checkpoint.

    Attributes:
        enabled: Train the head.
        num_classes: Logits (official 20: the 19 Cityscapes classes plus one never-labelled slot).
        ce_weight: Weight of the cross-entropy.
        lovasz_weight: Weight of the Lovasz-softmax loss.
    """

    enabled: bool = False
    num_classes: int = 20
    ce_weight: float = 0.5
    lovasz_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.ce_weight < 0 or self.lovasz_weight < 0:
            raise ValueError("num_classes must be >= 2 and the weights >= 0")
