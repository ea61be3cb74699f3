"""AdamW parameter groups and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from flowclas_ros.model.flowclas.torch_model import FlowCLAS
from flowclas_ros.training.config import OptimConfig


def decays(name: str, param: torch.nn.Parameter) -> bool:
    """Whether a parameter gets weight decay: conv / linear weights outside norms, biases and the flow.

    In FlowCLAS that leaves the projection head's 1x1 conv weight only; the
    flow (incl. its coupling subnets), the LayerNorm, ActNorm and the base
    distribution are density-model parameters that decay would bias.
    """
    return name.startswith("proj_head.") and param.ndim > 1


def build_optimizer(model: FlowCLAS, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``model.trainable_parameters()`` in a decayed and a non-decayed group."""
    trainable = {id(p) for p in model.trainable_parameters()}
    decayed, plain = [], []
    for name, param in model.named_parameters():
        if id(param) in trainable:
            (decayed if decays(name, param) else plain).append(param)
    groups = [
        {"params": decayed, "weight_decay": cfg.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


class WarmupCosine:
    """LR factor: linear warmup from ~0 to 1 over ``warmup`` steps, then cosine down to ``min_ratio``.

    A plain callable object (not a lambda) so that ``LambdaLR.state_dict()``
    saves its settings as plain numbers.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0):
        self.warmup = int(warmup)
        self.total = int(total)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        """Factor for the update that follows ``step`` completed steps."""
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(self.total - self.warmup, 1)
        progress = min(max(step - self.warmup, 0) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` stepping :class:`WarmupCosine` once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    )
