"""Turning per-cell flow log-densities into per-pixel anomaly maps and image scores.

Everything used by ``FlowCLAS.forward`` here is plain tensor maths on static
shapes, so it exports to ONNX (opset 17).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.model.flow import HALF_LOG_2PI


def likelihood_score(log_prob_map: torch.Tensor) -> torch.Tensor:
    """FlowCLAS score ``1 - exp(mean_c log N(z) + 0.5 log 2pi)``.

    ``log_prob_map`` is the channel-mean Gaussian log-density (with its
    normalising constant). Adding ``0.5 log 2pi`` back drops the constant, as
    the official code does, so the likelihood is relative to the peak of a unit
    Gaussian: a perfect inlier with sigma = 1 scores 0 and unlikely cells tend
    to 1. Scores below 0 are possible when learned sigmas are < 1; they are
    not clipped, to keep the ranking.
    """
    return 1.0 - torch.exp(log_prob_map + HALF_LOG_2PI)


def nll_score(log_prob_map: torch.Tensor) -> torch.Tensor:
    """Per-cell NLL in nats per channel: ``-mean_c log N(z_c; mu_c, sigma_c)``, without the log-det."""
    return -log_prob_map


def upsample_crop(
    score: torch.Tensor,
    padded_hw: tuple[int, int],
    out_hw: tuple[int, int],
    offset: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Bilinearly upsamples (B, h, w) to the padded input size, then crops the padding off.

    Args:
        score: Per-cell scores (B, h, w).
        padded_hw: Padded input size the features were computed from.
        out_hw: Original input size.
        offset: Top / left padding: the image starts there in the padded input.

    Returns:
        (B, out_h, out_w) scores.
    """
    up = F.interpolate(score.unsqueeze(1), size=padded_hw, mode="bilinear", align_corners=False)
    top, left = offset
    return up[:, 0, top : top + out_hw[0], left : left + out_hw[1]]


class GaussianBlur(nn.Module):
    """Separable Gaussian blur as two fixed convolutions (replicate-padded, ONNX-friendly).

    The kernel has radius ``ceil(3 sigma)``; ``sigma <= 0`` is the identity.
    """

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = float(sigma)
        radius = max(1, math.ceil(3.0 * self.sigma)) if self.sigma > 0 else 0
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (offsets / max(self.sigma, 1e-6)) ** 2)
        self.radius = radius
        self.register_buffer("kernel", (kernel / kernel.sum()).view(1, 1, 1, -1), persistent=False)

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        """Blurs (B, H, W) scores; returns the same shape."""
        if self.radius == 0:
            return score
        x = F.pad(score.unsqueeze(1), (self.radius,) * 4, mode="replicate")
        x = F.conv2d(x, self.kernel)  # horizontal
        x = F.conv2d(x, self.kernel.transpose(2, 3))  # vertical
        return x[:, 0]


def image_score(score_map: torch.Tensor, kind: str) -> torch.Tensor:
    """Reduces (B, H, W) score maps to (B,) image scores: ``max``, ``mean`` or ``p99``."""
    flat = score_map.flatten(1).float()
    if kind == "max":
        return flat.amax(dim=1)
    if kind == "mean":
        return flat.mean(dim=1)
    if kind == "p99":
        return torch.quantile(flat, 0.99, dim=1)  # linear interpolation, like numpy
    raise ValueError(f"score.image_score: unknown kind {kind!r} (expected max, mean or p99)")
