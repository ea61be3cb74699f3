"""Random-weight models and checkpoints for tests, benchmarks and smoke runs.

No pretrained weights can be fetched on the development machines, so tests and
benchmarks run a random-init ViT-S/14 (``weights: none``) with a short flow. It is a
real model written in the real checkpoint format; only its scores mean nothing.
An untouched random flow is nearly the identity and scores every pixel alike, so
``perturb`` nudges the trainable parameters to make scores vary with the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flowclas_ros.model.checkpoint import save_checkpoint
from flowclas_ros.model.config import BackboneConfig, FlowConfig, ModelConfig, PreprocessConfig, ScoreConfig
from flowclas_ros.model.method import AnomalyMethod, create_method


def random_config(
    *,
    input_size: tuple[int, int] | None = None,
    steps: int = 2,
    proj_dim: int | None = 16,
    seed: int = 0,
    **score: Any,
) -> ModelConfig:
    """A small config: ViT-S/14 without weights, ``steps`` flow steps.

    Args:
        input_size: ``preprocess.input_size``; None keeps the default.
        steps: Flow steps.
        proj_dim: ``flow.proj_dim``; None keeps the default.
        seed: ``ModelConfig.seed`` (model construction is deterministic in it).
        **score: ``ScoreConfig`` fields, e.g. ``kind="nll"``.
    """
    flow = FlowConfig(steps=steps) if proj_dim is None else FlowConfig(steps=steps, proj_dim=proj_dim)
    preprocess = PreprocessConfig() if input_size is None else PreprocessConfig(input_size=tuple(input_size))
    return ModelConfig(
        backbone=BackboneConfig(weights="none"),
        flow=flow,
        score=ScoreConfig(**score),
        preprocess=preprocess,
        seed=seed,
    )


def perturb_trainable(model: AnomalyMethod, seed: int = 0, scale: float = 0.05) -> None:
    """Adds ``scale`` x N(0, 1) noise (from its own generator) to every trainable parameter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.trainable_parameters():
            param.add_(scale * torch.randn(param.shape, generator=gen))


def random_model(
    *, perturb: float = 0.0, perturb_seed: int = 0, nan_weights: bool = False, **config: Any
) -> AnomalyMethod:
    """A random FlowCLAS (``create_method``) in eval mode (``config``: :func:`random_config` arguments).

    ``perturb`` > 0 calls :func:`perturb_trainable`; ``nan_weights`` fills the trainable
    parameters with NaN, so every score is NaN.
    """
    model = create_method(random_config(**config), warn_random_backbone=False).eval()
    if perturb:
        perturb_trainable(model, seed=perturb_seed, scale=perturb)
    if nan_weights:
        with torch.no_grad():
            for param in model.trainable_parameters():
                param.fill_(float("nan"))
    return model


def random_checkpoint(
    path: str | Path,
    *,
    threshold: float | None = None,
    provenance: dict[str, Any] | None = None,
    image_threshold: float | None = None,
    **model: Any,
) -> Path:
    """Writes :func:`random_model` (``model``: its arguments) as a checkpoint directory at ``path``."""
    return save_checkpoint(
        random_model(**model),
        path,
        threshold=threshold,
        provenance=provenance,
        image_threshold=image_threshold,
    )
