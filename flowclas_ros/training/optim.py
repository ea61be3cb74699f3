"""AdamW parameter groups and the learning-rate schedules (warmup + cosine, or OneCycleLR)."""

from __future__ import annotations

import math

import torch

from flowclas_ros.config_io import ConfigError
from flowclas_ros.model.method import AnomalyMethod
from flowclas_ros.training.config import OptimConfig


def decays(name: str, param: torch.nn.Parameter, rule: str = "proj_head") -> bool:
    """Whether a parameter gets weight decay.

    ``proj_head``: the projection head's 1x1 conv weight only; the flow (incl.
    its coupling subnets), the LayerNorm, ActNorm and the base distribution are
    density-model parameters that decay would bias. ``official``: the
    authors' name rule (``flowclas_module.py`` ``param_groups``): no decay for
    names containing ``bias``, ``norm`` or ``flow``, decay for the rest.
    """
    if rule == "official":
        return not any(word in name for word in ("bias", "norm", "flow"))
    return name.startswith("proj_head.") and param.ndim > 1


def build_optimizer(
    model: AnomalyMethod, cfg: OptimConfig, extra: dict[str, torch.nn.Module] | None = None
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters in a decayed and a non-decayed group.

    Args:
        model: The model (``model.trainable_parameters()``).
        cfg: Optimiser settings.
        extra: Training-only modules (e.g. ``{"seg_head": head}``), named by prefix.
    """
    trainable = {id(p) for p in model.trainable_parameters()}
    named = [(n, p) for n, p in model.named_parameters() if id(p) in trainable]
    for prefix, module in (extra or {}).items():
        named += [(f"{prefix}.{n}", p) for n, p in module.named_parameters() if p.requires_grad]
    decayed, plain = [], []
    for name, param in named:
        (decayed if decays(name, param, cfg.decay) else plain).append(param)
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


class LinearWarmupOneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """``OneCycleLR`` whose warm-up phase is linear while the decay stays cosine.

    That is the official ``LinearWarmupCosineAnnealingLR`` (a OneCycleLR
    subclass that anneals every phase but the last linearly). Only the
    per-phase interpolation is changed; phases, momentum cycling and state
    come from torch. Needs torch >= 2.2, whose ``get_lr`` calls ``_anneal_func``
    (checked in :func:`build_scheduler`).
    """

    def _anneal_func(self, start, end, pct):  # noqa: ANN001, ANN202 - torch's signature
        if self.last_epoch <= self._schedule_phases[0]["end_step"]:
            return self._annealing_linear(start, end, pct)
        return self._annealing_cos(start, end, pct)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The configured schedule, stepped once per optimiser step.

    ``warmup_cosine``: ``LambdaLR`` over :class:`WarmupCosine`. ``onecycle``:
    ``OneCycleLR`` (beta1 cycled between ``max_momentum`` and
    ``base_momentum``), with a linear warm-up when ``warmup_anneal`` is
    ``linear``.
    """
    if cfg.schedule == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupCosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
        )
    cls = LinearWarmupOneCycleLR if cfg.warmup_anneal == "linear" else torch.optim.lr_scheduler.OneCycleLR
    if cls is LinearWarmupOneCycleLR and not hasattr(torch.optim.lr_scheduler.OneCycleLR, "_anneal_func"):
        raise ConfigError(
            f"optim.warmup_anneal: linear needs torch >= 2.2 (have {torch.__version__}); use cos"
        )
    return cls(
        optimizer,
        max_lr=cfg.lr,
        total_steps=max(int(total_steps), 2),
        pct_start=cfg.pct_start,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=cfg.base_momentum,
        max_momentum=cfg.max_momentum,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
    )
