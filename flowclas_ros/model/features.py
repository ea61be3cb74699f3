"""A method's training objective (:class:`TrainingObjective`) and what it is given (:class:`FeatureBatch`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

IGNORE = 255
"""Mask value of cells no loss may use (padding, void)."""


@dataclass
class FeatureBatch:
    """One step's inputs at feature resolution.

    Attributes:
        mixed: Backbone features of the OE-mixed images (B, C, h, w).
        outlier: Backbone features of the standalone outlier images (B, C, h, w).
        mixed_mask: uint8 (B, h, w): 0 inlier, 1 pasted outlier, 255 ignore.
        outlier_mask: uint8 (B, h, w): 1 object, 0 other, 255 ignore.
        semantic: uint8 (B, H, W) train ids of the mixed images at pixel
            resolution (segmentation head), or None.
    """

    mixed: torch.Tensor
    outlier: torch.Tensor
    mixed_mask: torch.Tensor
    outlier_mask: torch.Tensor
    semantic: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """Samples in the batch."""
        return self.mixed.shape[0]


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast on CUDA with ``dtype``, or nothing (CPU / amp off)."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


class TrainingObjective(nn.Module):
    """Base of a method's training objective (``AnomalyMethod.objective`` returns one).

    ``forward(batch: FeatureBatch, generator: torch.Generator) -> (loss, parts)``: the scalar
    loss and its detached parts by name (logged). An ``nn.Module``, so that
    ``DistributedDataParallel`` can wrap it: everything touching trainable parameters happens
    inside ``forward``; ``generator`` seeds any sampling, per (seed, step, rank).
    """

    def extra_modules(self) -> dict[str, nn.Module]:
        """Training-only trainable modules by name (in the training state, not the checkpoint)."""
        return {}
