"""The FrEIA normalizing flow and its learned Gaussian base distribution.

Each flow step is ``ActNorm -> PermuteRandom -> AffineCouplingOneSided``
(tanh-clamped), with coupling subnets alternating 3x3 and 1x1 kernels, as in
the official FlowCLAS code. There is no positional conditioning.
"""

from __future__ import annotations

import math

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
from torch import nn

from flowclas_ros.model.config import FlowConfig

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class ActNorm(Fm.ActNorm):
    """FrEIA's ActNorm with three fixes for this use.

    * The log-det uses the input's actual spatial size (FrEIA 0.2 uses the size
      given at construction, wrong for any other image size).
    * Data-dependent initialisation happens only in training mode, so a fresh
      model's first inference does not silently rewrite its parameters.
    * Channels with zero spread get a unit scale instead of ``inf``.
    """

    def _initialize_with_data(self, data: torch.Tensor) -> None:
        flat = data.detach().transpose(0, 1).reshape(data.shape[1], -1)
        std = flat.std(dim=1)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.scale.data.view(-1)[:] = -torch.log(std)
        self.bias.data.view(-1)[:] = -flat.mean(dim=1) / std
        self.init_on_next_batch = False

    def forward(self, x, rev=False, jac=True):
        """Applies ``x * exp(scale) + bias`` (or its inverse); log-det = sum(scale) * H * W."""
        if self.init_on_next_batch and self.training and not rev:
            self._initialize_with_data(x[0])
        n_pixels = math.prod(x[0].shape[2:])  # this input's spatial size, not the construction one
        log_det = (self.scale.sum() * n_pixels).expand(x[0].shape[0])
        if rev:
            return [(x[0] - self.bias) * torch.exp(-self.scale)], -log_det
        return [x[0] * torch.exp(self.scale) + self.bias], log_det


class CouplingSubnet(nn.Module):
    """Pre-activation residual conv block predicting the coupling's (s, t).

    ``h = conv_k(relu(gn(conv_k(relu(gn(x)))))) + skip(x)``, then a zero
    initialised 1x1 output conv, so every coupling starts as the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, hidden_ratio: float):
        super().__init__()
        hidden = max(1, round(in_channels * hidden_ratio))
        pad = kernel_size // 2
        self.block = nn.Sequential(
            nn.GroupNorm(1, in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, hidden, kernel_size, padding=pad),
            nn.GroupNorm(1, hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, kernel_size, padding=pad),
        )
        self.skip = nn.Identity() if hidden == in_channels else nn.Conv2d(in_channels, hidden, 1)
        self.out = nn.Conv2d(hidden, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns (B, out_channels, H, W)."""
        return self.out(self.block(x) + self.skip(x))


def build_flow(channels: int, cfg: FlowConfig, seed: int) -> Ff.SequenceINN:
    """Builds the FrEIA ``SequenceINN`` over (C, H, W) feature maps.

    The spatial dims given to FrEIA are placeholders (1, 1): every module here
    is size-agnostic, so one flow serves any image size.

    Args:
        channels: Feature channels C.
        cfg: Steps, clamp, subnet width and the kernel-size cycle.
        seed: Base seed of the channel permutations (step i uses ``seed + i``).

    Returns:
        The flow; ``flow(x) -> (z, log_jac_det (B,))``.
    """
    flow = Ff.SequenceINN(channels, 1, 1)
    np_state = np.random.get_state()  # PermuteRandom reseeds numpy's global RNG
    try:
        for step in range(cfg.steps):
            kernel = cfg.kernel_sizes[step % len(cfg.kernel_sizes)]
            flow.append(ActNorm)
            flow.append(Fm.PermuteRandom, seed=seed + step)
            flow.append(
                Fm.AffineCouplingOneSided,
                subnet_constructor=lambda c_in, c_out, k=kernel: CouplingSubnet(
                    c_in, c_out, k, cfg.hidden_ratio
                ),
                clamp=cfg.clamp,
                clamp_activation="TANH",
            )
    finally:
        np.random.set_state(np_state)
    return flow


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Element-wise ``log N(z_c; mean_c, exp(log_sigma_c))`` for z (B, C, H, W) and (C,) parameters.

    The one Gaussian log-density of the package: both base distributions, the NLL loss and the
    anomaly score go through it.
    """
    mean = mean.view(1, -1, 1, 1)
    log_sigma = log_sigma.view(1, -1, 1, 1)
    return -0.5 * ((z - mean) * torch.exp(-log_sigma)) ** 2 - log_sigma - HALF_LOG_2PI


class DiagonalGaussian(nn.Module):
    """Base distribution N(mean, diag(exp(log_sigma))^2), one mean / sigma per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(channels))
        self.log_sigma = nn.Parameter(torch.zeros(channels))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Element-wise log N(z_c; mean_c, sigma_c) for z (B, C, H, W); same shape."""
        return gaussian_log_prob(z, self.mean, self.log_sigma)
