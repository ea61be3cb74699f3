"""The state of one training run (``training/loop.py``) and what it reports: summary and log rows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowclas_ros.data.outliers.dataset import OETrainDataset
from flowclas_ros.model.features import TrainingObjective
from flowclas_ros.model.method import AnomalyMethod
from flowclas_ros.training.datasets import TrainData
from flowclas_ros.training.distributed import DistContext, all_reduce_mean
from flowclas_ros.training.validation import ValidationSet


@dataclass
class TrainSummary:
    """What a finished (or stopped) run reports.

    Attributes:
        step: Optimiser steps completed.
        total_steps: Configured total.
        best_metrics: Val metrics of the saved checkpoint (None if never validated).
        best_step: Step of the saved checkpoint.
        checkpoint: ``RUN_DIR/checkpoint`` (None if not written yet).
        threshold: Calibrated pixel threshold stored in the checkpoint.
        images_per_s: Training throughput in samples (mixed + outlier image pairs) per second,
            over all processes, excluding validation and feature caching.
        wall_s: Wall time of this invocation.
        resumed_from: Step the run resumed from (0 = fresh).
    """

    step: int
    total_steps: int
    best_metrics: dict[str, Any] | None
    best_step: int
    checkpoint: Path | None
    threshold: float | None
    images_per_s: float
    wall_s: float
    resumed_from: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    image_threshold: float | None = None  # calibrated image threshold stored in the checkpoint


LOGGED_PARTS = {
    "nll": "nll",
    "con": "con",
    "anchors_outlier": "anchors_outlier",
    "ce": "seg_ce",
    "lovasz": "seg_lovasz",
}
"""Objective parts logged, by their ``log.csv`` column."""


def _no_best() -> dict[str, Any]:
    return {"ap": None, "step": -1, "metrics": None, "threshold": None, "image_threshold": None}


@dataclass
class RunState:
    """What one training invocation builds before its first step, and the state its steps advance."""

    ctx: DistContext
    data: TrainData
    train_set: OETrainDataset
    model: AnomalyMethod
    valset: ValidationSet
    objective: TrainingObjective
    extra_modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    steps_per_epoch: int
    total: int
    parent: dict[str, Any] | None
    step: int = 0
    best: dict[str, Any] = field(default_factory=_no_best)
    per_metric: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def log_row(
    run: RunState, epoch: int, loss: float, parts: dict[str, float], rate: float, wall_start: float
) -> dict[str, Any]:
    """The ``log.csv`` row of this step: losses averaged over the processes, LR, throughput.

    The objective's parts that have a column are logged (:data:`LOGGED_PARTS`); a method's
    objective gives those it has, so the others stay empty.
    """
    names = [name for name in LOGGED_PARTS if name in parts]  # the same on every process
    values = all_reduce_mean([loss] + [parts[name] for name in names], run.ctx)
    row = {
        "step": run.step,
        "epoch": epoch,
        "time_s": time.perf_counter() - wall_start,
        "lr": run.scheduler.get_last_lr()[0],
        "loss": values[0],
        "images_per_s": rate,
        "beta1": run.optimizer.param_groups[0]["betas"][0],
    }
    row.update({LOGGED_PARTS[name]: value for name, value in zip(names, values[1:])})
    return row
