"""One optimisation step, and what precedes the first one (the DDP wrapper).

Kept apart from the loop (``training/loop.py``), which decides when to step, validate, log
and save; this module only says how one step updates the trainable parts.
"""

from __future__ import annotations

import math

import torch
from torch.nn.parallel import DistributedDataParallel

from flowclas_ros.training.batches import FeatureBatch
from flowclas_ros.training.distributed import DistContext


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``amp`` on ``device`` (None = fp32)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the contrastive cell sampling at ``step`` on ``rank``."""
    return (seed * 1_000_003 + step * 7_919 + rank) % (2**63)


def wrap_ddp(objective: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """The objective under DDP, which broadcasts rank 0's parameters: every rank starts equal."""
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=device_ids, broadcast_buffers=False)


def train_step(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    batch: FeatureBatch,
    generator: torch.Generator,
    grad_clip: float,
    step: int,
) -> tuple[float, dict[str, float]]:
    """Loss, backward (through the AMP scaler when given), gradient clipping, optimiser and LR step.

    Args:
        module: The objective (or its DDP wrapper): ``module(batch, generator) -> (loss, parts)``.
        optimizer: Optimiser over the trainable parts.
        scheduler: Its LR schedule, stepped once.
        scaler: fp16 AMP gradient scaler, or None.
        batch: The step's features.
        generator: Seeds the contrastive cell sampling (:func:`step_seed`).
        grad_clip: Max gradient norm (0: no clipping).
        step: Steps done before this one (for the error message).

    Returns:
        The loss and its detached parts as floats.

    Raises:
        FloatingPointError: The loss is NaN or infinite (nothing is updated).
    """
    loss, parts = module(batch, generator)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(
            f"loss is {value} at step {step + 1}; lower optim.lr or loss.alpha, or keep optim.grad_clip > 0"
        )
    optimizer.zero_grad(set_to_none=True)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
    scheduler.step()
    return value, {k: float(v) for k, v in parts.items()}
