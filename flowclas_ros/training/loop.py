"""The training loop behind ``flowclas-train``: single process or DDP under ``torchrun``.

Determinism and resume: data order, OE samples and the contrastive cell
sampling are pure functions of (seed, step, rank), and the model, optimiser,
scheduler and RNG states are restored from ``RUN_DIR/state/``. A resumed run
therefore continues bit-for-bit like an uninterrupted one (same device,
thread count and world size).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import flowclas_ros
from flowclas_ros.config_io import ConfigError, read_mapping, save, to_dict
from flowclas_ros.data.outliers.dataset import OETrainDataset
from flowclas_ros.model.flowclas.torch_model import FlowCLAS
from flowclas_ros.training.batches import FeatureBatch, LiveBatches, PoolBatches
from flowclas_ros.training.checkpointing import (
    BEST_DIR,
    find_latest_state,
    load_training_state,
    recover_best,
    save_best,
    save_training_state,
)
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.datasets import TrainData, prepare_data, resolve
from flowclas_ros.training.distributed import (
    DistContext,
    all_reduce_mean,
    barrier,
    init_distributed,
    shutdown,
)
from flowclas_ros.training.logs import RunLog, git_commit
from flowclas_ros.training.objective import FlowCLASObjective
from flowclas_ros.training.optim import build_optimizer, build_scheduler
from flowclas_ros.training.selection import BEST_AP_DIR, BEST_FPR95_DIR, improved, is_better, val_columns
from flowclas_ros.training.validation import ValidationSet, ValResult, choose_val_mode, validate

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


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


class Trainer:
    """Trains FlowCLAS per a :class:`TrainConfig` into ``run_dir``, resuming if it holds a state.

    Args:
        cfg: Training config.
        run_dir: Output directory (``state/``, ``checkpoint/``, ``log.csv``, ``config.yaml``).
        progress: Show tqdm bars (main process only).
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress

    def run(self, stop_after: int | None = None) -> TrainSummary:
        """Trains until the configured number of steps (or ``stop_after`` steps, saving the state there).

        Raises:
            ConfigError: Bad config or data paths (message names the key).
            FloatingPointError: The loss or the validation scores became NaN / inf.
        """
        ctx = init_distributed(self.cfg.device)
        try:
            return self._run(ctx, stop_after)
        finally:
            shutdown(ctx)

    # -- setup ---------------------------------------------------------------

    def _check_run_dir(self) -> bool:
        """Checks a previous run's model config (read only); returns True if a training state exists."""
        cfg_path = self.run_dir / CONFIG_FILE
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"--out {self.run_dir}: exists and is not a directory")
        resuming = find_latest_state(self.run_dir) is not None
        if resuming and cfg_path.is_file():
            previous = read_mapping(cfg_path).get("model")
            if previous != to_dict(self.cfg.model):
                raise ConfigError(
                    f"--out {self.run_dir}: holds a run with a different model config ({cfg_path}); "
                    "resume with the same model settings or use a new --out"
                )
        return resuming

    def _open_run_dir(self, ctx: DistContext) -> None:
        """Creates the run dir and writes ``config.yaml`` (after the inputs were checked)."""
        barrier(ctx)  # everyone has read the previous state before rank 0 writes
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for name in (BEST_DIR, BEST_AP_DIR, BEST_FPR95_DIR):
                recover_best(self.run_dir, name)
            save(self.cfg, self.run_dir / CONFIG_FILE)
        barrier(ctx)

    def _setup_process(self) -> None:
        """Thread count and global seeds (data, OE and sampling use their own seeded streams)."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % (2**32))
        torch.manual_seed(self.cfg.seed)

    def _batches(
        self, dataset: OETrainDataset, model: FlowCLAS, ctx: DistContext, amp_dtype
    ) -> LiveBatches | PoolBatches:
        cfg = self.cfg
        if cfg.cache.mode == "pool":
            dtype = torch.float16 if cfg.cache.dtype == "float16" else torch.float32
            return PoolBatches(
                dataset,
                model,
                ctx,
                cfg.batch_size,
                cfg.seed,
                cfg.cache.pool_size,
                dtype,
                amp_dtype,
                num_workers=cfg.num_workers,
                progress=self.progress and ctx.is_main,
            )
        return LiveBatches(dataset, model, ctx, cfg.batch_size, cfg.seed, cfg.num_workers, amp_dtype)

    def _provenance(self, data: TrainData, result: ValResult, step: int) -> dict[str, Any]:
        cfg = self.cfg
        backbone = cfg.model.backbone
        return {
            "backbone": {
                "name": backbone.name,
                "weights": backbone.weights,
                "weights_file": backbone.weights_file,
                "weights_sha256": backbone.weights_sha256,
                "layers": list(backbone.layers),
                "norm": backbone.norm,
            },
            "training_data": {
                "train": str(data.train.root.resolve()),
                "n_train": len(data.train),
                "val": str(data.val.root.resolve()) + (" (held out from train)" if data.val_held_out else ""),
                "n_val": len(data.val),
                "val_anomalies": result.metrics.get("mode"),
                "test": [str(resolve(cfg.data, t)) for t in cfg.data.test],
                "oe": cfg.oe.kind,
            },
            "val_metrics": result.metrics,
            "target_fpr": cfg.target_fpr,
            "image_target_fpr": cfg.image_target_fpr,
            "step": step,
            "train_config": to_dict(cfg),
            "git_commit": git_commit(),
            "flowclas_ros_version": flowclas_ros.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    # -- main loop -----------------------------------------------------------

    def _run(self, ctx: DistContext, stop_after: int | None) -> TrainSummary:
        cfg, main = self.cfg, ctx.is_main
        wall_start = time.perf_counter()
        resuming = self._check_run_dir()
        self._setup_process()
        # Inputs first (data folders, OE source): a bad path fails before the model is built.
        data = prepare_data(cfg.data, ctx, progress=self.progress and main)
        if cfg.seg.enabled and (cfg.cache.mode != "none" or cfg.data.layout != "cityscapes"):
            raise ConfigError(
                "seg.enabled: needs data.layout cityscapes (semantic labels) and cache.mode none "
                "(the feature pool caches no labels)"
            )
        train_set = OETrainDataset(
            data.train,
            cfg.oe,
            cfg.model.preprocess,
            seed=cfg.seed,
            hflip=cfg.data.hflip,
            vflip=cfg.data.vflip,
            crop=cfg.data.crop,
            semantic=cfg.seg.enabled,
        )
        model = FlowCLAS(cfg.model).to(ctx.device).train()
        self._open_run_dir(ctx)
        amp_dtype = resolve_amp(cfg.amp, ctx.device)
        valset = ValidationSet(
            data.val,
            choose_val_mode(data.val, cfg.data.val_anomalies),
            cfg.oe,
            model,
            ctx,
            seed=cfg.seed + 1,
            max_images=cfg.data.val_max_images,
            cache_features=cfg.cache.val,
        )
        per_process = len(data.train) // ctx.world_size
        steps_per_epoch = per_process // cfg.batch_size
        if steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size: {cfg.batch_size} is larger than the {per_process} training images per process "
                f"({len(data.train)} images in data.train over {ctx.world_size} processes)"
            )
        total = cfg.steps or cfg.epochs * steps_per_epoch
        objective = FlowCLASObjective(model, cfg.loss, amp_dtype, cfg.seg)
        extra_modules = objective.extra_modules()
        optimizer = build_optimizer(model, cfg.optim, extra_modules)
        scheduler = build_scheduler(optimizer, cfg.optim, total)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        step, best = 0, {"ap": None, "step": -1, "metrics": None, "threshold": None, "image_threshold": None}
        per_metric: dict[str, Any] = {}
        state_path = find_latest_state(self.run_dir) if resuming else None
        if state_path is not None:
            restored = load_training_state(
                state_path, model, optimizer, scheduler, scaler, extra_modules=extra_modules
            )
            step = restored.step
            best.update(restored.extra.get("best", {}))
            per_metric.update(restored.extra.get("per_metric", {}))
            if main:
                logger.info("resuming %s from step %d", self.run_dir, step)
        resumed_from = step
        log = RunLog(self.run_dir, resume_step=step, enabled=main)
        end = total if stop_after is None else min(total, stop_after)
        needs_init = step == 0  # ActNorm's data-dependent init happens on the first training batch
        train_module: torch.nn.Module = objective
        if ctx.enabled and not needs_init:
            train_module = self._wrap_ddp(objective, ctx)
        source = self._batches(train_set, model, ctx, amp_dtype) if step < end else None
        history: list[dict[str, Any]] = []
        train_time, train_samples = 0.0, 0
        bar = tqdm(
            total=total, initial=step, desc="training", unit="step", disable=not (self.progress and main)
        )
        while step < end and source is not None:
            epoch, skip = divmod(step, steps_per_epoch)
            tick = time.perf_counter()
            for batch in source.epoch(epoch, skip):
                if needs_init:
                    self._init_actnorm(model, batch)
                    needs_init = False
                    if ctx.enabled:
                        train_module = self._wrap_ddp(objective, ctx)
                loss, parts = self._train_step(train_module, optimizer, scheduler, scaler, batch, step, ctx)
                step += 1
                now = time.perf_counter()
                train_time += now - tick
                train_samples += batch.size * ctx.world_size
                rate = batch.size * ctx.world_size / max(now - tick, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
                row: dict[str, Any] = {}
                if step % cfg.log_every == 0 or step == end:
                    values = all_reduce_mean(
                        [loss, parts["nll"], parts["con"], parts["anchors_outlier"]]
                        + [parts.get("ce", 0.0), parts.get("lovasz", 0.0)],
                        ctx,
                    )
                    row = {
                        "step": step,
                        "epoch": epoch,
                        "time_s": time.perf_counter() - wall_start,
                        "lr": scheduler.get_last_lr()[0],
                        "loss": values[0],
                        "nll": values[1],
                        "con": values[2],
                        "anchors_outlier": values[3],
                        "images_per_s": rate,
                        "beta1": optimizer.param_groups[0]["betas"][0],
                    }
                    if "ce" in parts:
                        row.update(seg_ce=values[4], seg_lovasz=values[5])
                val_due = step % cfg.val_every == 0 if cfg.val_every else step % steps_per_epoch == 0
                if val_due or step == total:
                    result = validate(
                        model, valset, ctx, cfg.target_fpr, cfg.batch_size, amp_dtype, cfg.image_target_fpr
                    )
                    row = {**(row or {"step": step, "epoch": epoch}), **val_columns(result)}
                    history.append({"step": step, **result.metrics, "threshold": result.threshold})
                    if is_better(result, best):
                        best = {"ap": result.metrics["ap"], "step": step, "metrics": result.metrics}
                        best["threshold"] = result.threshold
                        best["image_threshold"] = result.image_threshold
                        if main:
                            save_best(
                                self.run_dir,
                                model,
                                result.threshold,
                                self._provenance(data, result, step),
                                image_threshold=result.image_threshold,
                            )
                        barrier(ctx)
                    if cfg.checkpoint_per_metric:
                        for name in improved(result.metrics, per_metric, step):
                            if main:
                                prov = self._provenance(data, result, step)
                                save_best(
                                    self.run_dir,
                                    model,
                                    result.threshold,
                                    prov,
                                    name=name,
                                    image_threshold=result.image_threshold,
                                )
                        barrier(ctx)
                if row:
                    log.write(row)
                if step % cfg.checkpoint_every == 0 or step == end:
                    if main:
                        save_training_state(
                            self.run_dir,
                            step,
                            model,
                            optimizer,
                            scheduler,
                            scaler,
                            {"best": best, "epoch": epoch, "per_metric": per_metric},
                            extra_modules,
                        )
                    barrier(ctx)
                if step >= end:
                    break
                tick = time.perf_counter()
        bar.close()
        log.close()
        checkpoint = self.run_dir / BEST_DIR
        return TrainSummary(
            step=step,
            total_steps=total,
            best_metrics=best["metrics"],
            best_step=best["step"],
            checkpoint=checkpoint if checkpoint.is_dir() else None,
            threshold=best["threshold"],
            images_per_s=train_samples / train_time if train_time > 0 else 0.0,
            wall_s=time.perf_counter() - wall_start,
            resumed_from=resumed_from,
            history=history,
            image_threshold=best.get("image_threshold"),
        )

    @staticmethod
    def _wrap_ddp(objective: FlowCLASObjective, ctx: DistContext) -> torch.nn.Module:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # The wrapper broadcasts rank 0's parameters, so every rank starts identical.
        return DistributedDataParallel(objective, device_ids=device_ids, broadcast_buffers=False)

    @staticmethod
    @torch.no_grad()
    def _init_actnorm(model: FlowCLAS, batch: FeatureBatch) -> None:
        """Runs the flow once in train mode so every ActNorm initialises from this batch's statistics."""
        model.train()
        model.flow_forward(torch.cat([batch.mixed, batch.outlier]))

    def _train_step(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler | None,
        batch: FeatureBatch,
        step: int,
        ctx: DistContext,
    ) -> tuple[float, dict[str, float]]:
        generator = torch.Generator().manual_seed(step_seed(self.cfg.seed, step, ctx.rank))
        loss, parts = module(batch, generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss is {value} at step {step + 1}; lower optim.lr or loss.alpha, "
                "or keep optim.grad_clip > 0"
            )
        optimizer.zero_grad(set_to_none=True)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip = self.cfg.optim.grad_clip
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
        scheduler.step()
        return value, {k: float(v) for k, v in parts.items()}
