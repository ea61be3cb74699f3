"""The FlowCLAS authors' flow (``model.flow.variant: official``), beside ours in ``flow.py``.

Their flow is a FrEIA ``SequenceINN`` built with FrEIA pinned to git commit
``421249652c``, whose ActNorm differs from PyPI FrEIA 0.2 (parameters
``log_scale`` / ``loc`` and a bool ``is_initialized`` buffer,
``y = (x - loc) / exp(log_scale)``; 0.2 has ``scale`` / ``bias`` and
``y = x exp(scale) + bias``). That commit is not on PyPI, so the three step
modules are written here, with the authors' parameter names so their state
dict maps one to one (``module_list.{3i}`` ActNorm, ``{3i+1}`` permutation,
``{3i+2}`` coupling):

* :class:`OfficialActNorm`: ``y = (x - loc) / exp(log_scale)``,
  log-det ``-sum(log_scale) * H * W``.
* :class:`OfficialPermute`: fixed channel permutation; ``perm`` / ``perm_inv``
  are int64 parameters (no gradient), as FrEIA stores them.
* :class:`OfficialCoupling`: FrEIA's ``AffineCouplingOneSided`` with
  ``clamp_activation=TANH``: ``a = subnet(x1)``, ``s = clamp tanh(a[:, :C2])``,
  ``t = a[:, C2:]``, ``y2 = x2 exp(s) + t``.
* :class:`ResidualSubnet`: the authors' "residual" subnet (GN-ReLU-3x3 ->
  GN-ReLU-1x1 -> GN-ReLU-3x3, identity skip, 1x1 output conv; no biases; the
  kernel-size argument is ignored, as in their code).
* :class:`OfficialGaussian`: their base distribution (``mu``, ``log_scale``,
  buffer ``log_normalizer``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from flowclas_ros.model.config import FlowConfig
from flowclas_ros.model.flow import gaussian_log_prob


class OfficialActNorm(nn.Module):
    """Per-channel ``(x - loc) / exp(log_scale)``; data-initialised on the first training batch."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("is_initialized", torch.tensor(False))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def initialize(self, x: torch.Tensor) -> None:
        """Sets loc / log_scale to the batch's channel mean / log-std (zero-std channels get the mean std)."""
        dims = [0, 2, 3]
        loc = x.detach().mean(dim=dims, keepdim=True)
        std = x.detach().std(dim=dims, keepdim=True)
        invalid = torch.isclose(std, torch.zeros_like(std))
        if bool(invalid.any()):
            fill = std[~invalid].mean() if bool((~invalid).any()) else torch.ones_like(std)
            std = torch.where(invalid, fill, std)
        self.log_scale.data.copy_(torch.log(std))
        self.loc.data.copy_(loc)
        self.is_initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``y`` and the log-det per sample (B,)."""
        if self.training and not bool(self.is_initialized):
            self.initialize(x)
        log_det = -self.log_scale.sum() * (x.shape[2] * x.shape[3])
        return (x - self.loc) / torch.exp(self.log_scale), log_det.expand(x.shape[0])


class OfficialPermute(nn.Module):
    """Fixed random channel permutation (numpy ``permutation`` seeded per step, like FrEIA)."""

    def __init__(self, channels: int, seed: int):
        super().__init__()
        perm = np.random.RandomState(seed).permutation(channels)
        inverse = np.argsort(perm)
        self.perm = nn.Parameter(torch.from_numpy(perm).long(), requires_grad=False)
        self.perm_inv = nn.Parameter(torch.from_numpy(inverse).long(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the permuted ``x`` and a zero log-det."""
        return x[:, self.perm], x.new_zeros(x.shape[0])


class ResidualSubnet(nn.Module):
    """The authors' "residual" coupling subnet (``subnet_type: residual``, hidden ratio 1)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.gn1 = nn.GroupNorm(1, in_channels)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(1, in_channels)
        self.conv2 = nn.Conv2d(in_channels, in_channels, 1, bias=False)
        self.gn3 = nn.GroupNorm(1, in_channels)
        self.conv3 = nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False)
        self.conv_out = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        nn.init.zeros_(self.conv_out.weight)  # every coupling starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H, W)."""
        out = self.conv1(torch.relu(self.gn1(x)))
        out = self.conv2(torch.relu(self.gn2(out)))
        out = self.conv3(torch.relu(self.gn3(out)))
        return self.conv_out(out + x)


class OfficialCoupling(nn.Module):
    """One-sided affine coupling: x1 (first C/2 channels) conditions an affine map of x2."""

    def __init__(self, channels: int, clamp: float):
        super().__init__()
        self.split1 = round(channels * 0.5)
        self.split2 = channels - self.split1
        self.clamp = clamp
        self.subnet = ResidualSubnet(self.split1, 2 * self.split2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``cat(x1, x2 exp(s) + t)`` and ``sum(s)`` per sample."""
        x1, x2 = torch.split(x, [self.split1, self.split2], dim=1)
        a = self.subnet(x1)
        s = self.clamp * torch.tanh(a[:, : self.split2])
        y2 = x2 * torch.exp(s) + a[:, self.split2 :]
        return torch.cat((x1, y2), dim=1), s.sum(dim=(1, 2, 3))


class OfficialFlow(nn.Module):
    """``steps`` x (ActNorm, permutation, coupling) in ``module_list``; ``flow(x) -> (z, log_jac_det)``."""

    def __init__(self, channels: int, cfg: FlowConfig, seed: int):
        super().__init__()
        modules: list[nn.Module] = []
        for step in range(cfg.steps):
            modules.append(OfficialActNorm(channels))
            modules.append(OfficialPermute(channels, seed + step))
            modules.append(OfficialCoupling(channels, cfg.clamp))
        self.module_list = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs every step; the log-dets are summed per sample."""
        log_det = x.new_zeros(x.shape[0])
        for module in self.module_list:
            x, step_log_det = module(x)
            log_det = log_det + step_log_det
        return x, log_det


class OfficialGaussian(nn.Module):
    """The authors' base distribution: per-channel ``mu`` and ``log_scale``.

    :meth:`log_prob` returns the element-wise Gaussian log-density (with its
    constant), like ``DiagonalGaussian``, so the model's channel mean plus
    ``0.5 log 2pi`` is exactly their eval log p,
    ``mean_c(-0.5 ((z - mu) exp(-log_scale))^2 - log_scale)``.
    ``log_normalizer`` is their stored ``-C/2 log 2pi`` (kept for the key map).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("log_normalizer", torch.tensor(-0.5 * channels * math.log(2 * math.pi)))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Element-wise log N(z_c; mu_c, exp(log_scale_c)) for z (B, C, H, W); same shape."""
        return gaussian_log_prob(z, self.mu, self.log_scale)
