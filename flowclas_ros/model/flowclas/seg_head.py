"""Segmentation head on the flow latent z (the official Cityscapes recipe; used in training only)."""

from __future__ import annotations

from torch import nn


class SegHead(nn.Sequential):
    """3x3 conv (C -> C/2, padding 1), BatchNorm, ReLU, 1x1 conv to ``num_classes`` logits.

    The official ``flowclas_model.py`` builds the same stack per scale; its
    ``kaiming_init`` call on the ``nn.Sequential`` is a no-op (mmengine only
    initialises modules that have a ``weight``), so torch's default init is
    the faithful one.

    Args:
        channels: Channels C of z.
        num_classes: Output logits.
    """

    def __init__(self, channels: int, num_classes: int):
        hidden = max(1, channels // 2)
        super().__init__(
            nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, kernel_size=1),
        )
