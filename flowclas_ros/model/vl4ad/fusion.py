"""Fusion of the FlowCLAS flow score with the VL4AD text score.

The two scores live on different scales, so each is first normalised with
statistics measured on validation *inlier* pixels (stored in the config, so a
checkpoint carries them):

- ``norm: minmax``: ``(s - lo) / (hi - lo)`` with ``(lo, hi)`` the 1st and
  99th percentiles of inlier scores (a robust min-max). Inliers map to about
  ``[0, 1]``; outliers land above 1 and are not clipped, so they stay ranked.
- ``norm: zscore``: ``(s - mean) / std`` of inlier scores.

Then ``mode: weighted`` gives ``(1 - weight) * flow_n + weight * text_n`` and
``mode: max`` gives ``max(flow_n, text_n)``. ``mode: off`` returns the flow
score tensor itself, untouched (the text score is ignored and may be None).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import torch

from flowclas_ros.model.vl4ad.config import FusionConfig, NormKind


def normalize_score(score: torch.Tensor, stats: tuple[float, float], kind: NormKind) -> torch.Tensor:
    """Applies ``minmax`` or ``zscore`` normalisation with stored statistics."""
    a, b = float(stats[0]), float(stats[1])
    if kind == "minmax":
        return (score - a) / (b - a)
    return (score - a) / b


def fuse(flow_score: torch.Tensor, text_score: torch.Tensor | None, cfg: FusionConfig) -> torch.Tensor:
    """Combines the two per-pixel scores.

    Args:
        flow_score: FlowCLAS score ``(B, H, W)``.
        text_score: Text score of the same shape; may be None when ``mode == "off"``.
        cfg: Fusion settings.

    Returns:
        The fused score; for ``mode == "off"`` the very ``flow_score`` object.

    Raises:
        ValueError: Missing text score or shape mismatch in a fusing mode.
    """
    if cfg.mode == "off":
        return flow_score
    if text_score is None:
        raise ValueError(f"fusion mode {cfg.mode!r} needs a text score (configure model.text)")
    if text_score.shape != flow_score.shape:
        raise ValueError(
            f"fusion: flow score {tuple(flow_score.shape)} vs text score {tuple(text_score.shape)}"
        )
    flow_n = normalize_score(flow_score, cfg.flow_norm, cfg.norm)
    text_n = normalize_score(text_score.to(flow_score.dtype), cfg.text_norm, cfg.norm)
    if cfg.mode == "weighted":
        return (1.0 - cfg.weight) * flow_n + cfg.weight * text_n
    return torch.maximum(flow_n, text_n)


def fit_norm(
    inlier_scores: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    kind: NormKind = "minmax",
    max_samples: int = 2_000_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Normalisation statistics from inlier pixel scores (validation set, anomaly mask == 0).

    Args:
        inlier_scores: One array/tensor or an iterable of them (flattened, concatenated).
        kind: ``minmax`` -> (1st, 99th percentile); ``zscore`` -> (mean, std).
        max_samples: Uniform random subsample size bound (keeps memory flat).
        seed: Subsampling seed.

    Returns:
        The pair to store in ``FusionConfig.flow_norm`` / ``text_norm``.

    Raises:
        ValueError: On no finite scores or a degenerate (constant) distribution.
    """
    if isinstance(inlier_scores, (torch.Tensor, np.ndarray)):
        inlier_scores = [inlier_scores]
    parts = [torch.as_tensor(s).detach().float().reshape(-1).cpu() for s in inlier_scores]
    values = torch.cat(parts) if parts else torch.empty(0)
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        raise ValueError("fit_norm: no finite inlier scores")
    if values.numel() > max_samples:
        generator = torch.Generator().manual_seed(seed)
        values = values[torch.randperm(values.numel(), generator=generator)[:max_samples]]
    if kind == "minmax":
        lo, hi = torch.quantile(values.double(), torch.tensor([0.01, 0.99], dtype=torch.float64)).tolist()
        if not hi > lo:
            raise ValueError(f"fit_norm: inlier scores are constant ({lo}); cannot min-max normalise")
        return float(lo), float(hi)
    mean, std = float(values.double().mean()), float(values.double().std())
    if not std > 0:
        raise ValueError(f"fit_norm: inlier scores are constant ({mean}); cannot z-score normalise")
    return mean, std


def calibrate_fusion(
    cfg: FusionConfig,
    flow_inliers: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    text_inliers: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
) -> FusionConfig:
    """Returns ``cfg`` with ``flow_norm`` / ``text_norm`` fitted on inlier pixel scores."""
    return dataclasses.replace(
        cfg, flow_norm=fit_norm(flow_inliers, cfg.norm), text_norm=fit_norm(text_inliers, cfg.norm)
    )
