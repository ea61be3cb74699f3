"""The training loop behind ``flowclas-train``: single process or DDP under ``torchrun``.

Determinism and resume: data order, OE samples and the contrastive cell
sampling are pure functions of (seed, step, rank), and the model, optimiser,
scheduler and RNG states are restored from ``RUN_DIR/state/``. A resumed run
therefore continues bit-for-bit like an uninterrupted one (same device,
thread count and world size).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flowclas_ros.config_io import ConfigError, read_mapping, save, to_dict
from flowclas_ros.data.outliers.dataset import OETrainDataset
from flowclas_ros.model.checkpoint import load_trainable
from flowclas_ros.model.checkpoint_meta import CheckpointError
from flowclas_ros.model.config import DEFAULT_METHOD
from flowclas_ros.model.method import AnomalyMethod, create_method
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
from flowclas_ros.training.datasets import prepare_data
from flowclas_ros.training.distributed import (
    DistContext,
    barrier,
    init_distributed,
    shutdown,
)
from flowclas_ros.training.init_from import Parent
from flowclas_ros.training.logs import RunLog
from flowclas_ros.training.optim import build_optimizer, build_scheduler
from flowclas_ros.training.provenance import build_provenance
from flowclas_ros.training.run_state import RunState, TrainSummary, log_row
from flowclas_ros.training.selection import BEST_AP_DIR, BEST_FPR95_DIR, improved, is_better, val_columns
from flowclas_ros.training.step import resolve_amp, step_seed, train_step, wrap_ddp
from flowclas_ros.training.validation import ValidationSet, choose_val_mode, validate

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


class Trainer:
    """Trains ``model.method`` per a :class:`TrainConfig` into ``run_dir``, resuming if it holds a state.

    Args:
        cfg: Training config.
        run_dir: Output directory (``state/``, ``checkpoint/``, ``log.csv``, ``config.yaml``).
        progress: Show tqdm bars (main process only).
        parent: ``--init-from``: start from this checkpoint's weights (``init_from.py``) unless
            ``run_dir`` holds a training state, which is resumed instead.
    """

    def __init__(
        self, cfg: TrainConfig, run_dir: str | Path, *, progress: bool = True, parent: Parent | None = None
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.parent = parent

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
            if isinstance(previous, dict):  # runs written before model.method trained the default
                previous.setdefault("method", DEFAULT_METHOD)
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
        self, dataset: OETrainDataset, model: AnomalyMethod, ctx: DistContext, amp_dtype
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

    # -- phases --------------------------------------------------------------

    def _run(self, ctx: DistContext, stop_after: int | None) -> TrainSummary:
        wall_start = time.perf_counter()
        resuming = self._check_run_dir()
        self._setup_process()
        run = self._build(ctx)
        self._restore(run, resuming)
        resumed_from = run.step
        log = RunLog(self.run_dir, resume_step=run.step, enabled=ctx.is_main)
        end = run.total if stop_after is None else min(run.total, stop_after)
        train_time, train_samples = self._train(run, log, end, wall_start)
        log.close()
        checkpoint = self.run_dir / BEST_DIR
        return TrainSummary(
            step=run.step,
            total_steps=run.total,
            best_metrics=run.best["metrics"],
            best_step=run.best["step"],
            checkpoint=checkpoint if checkpoint.is_dir() else None,
            threshold=run.best["threshold"],
            images_per_s=train_samples / train_time if train_time > 0 else 0.0,
            wall_s=time.perf_counter() - wall_start,
            resumed_from=resumed_from,
            history=run.history,
            image_threshold=run.best.get("image_threshold"),
        )

    def _build(self, ctx: DistContext) -> RunState:
        """Data, model, validation set, objective and optimiser (inputs first: a bad path fails early)."""
        cfg = self.cfg
        data = prepare_data(cfg.data, ctx, progress=self.progress and ctx.is_main)
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
        model = create_method(cfg.model).to(ctx.device).train()
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
        objective = model.objective(cfg.loss, cfg.seg, amp_dtype)
        extra_modules = objective.extra_modules()
        optimizer = build_optimizer(model, cfg.optim, extra_modules)
        scheduler = build_scheduler(optimizer, cfg.optim, total)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        parent = self.parent.as_dict() if self.parent is not None else None
        return RunState(
            ctx, data, train_set, model, valset, objective, extra_modules, optimizer, scheduler, scaler,
            amp_dtype, steps_per_epoch, total, parent,
        )  # fmt: skip

    def _restore(self, run: RunState, resuming: bool) -> None:
        """Resumes from the run dir's latest state, or starts from ``--init-from``'s weights."""
        state_path = find_latest_state(self.run_dir) if resuming else None
        if state_path is not None:
            restored = load_training_state(
                state_path,
                run.model,
                run.optimizer,
                run.scheduler,
                run.scaler,
                extra_modules=run.extra_modules,
            )
            run.step = restored.step
            run.best.update(restored.extra.get("best", {}))
            run.per_metric.update(restored.extra.get("per_metric", {}))
            if run.ctx.is_main:
                logger.info("resuming %s from step %d", self.run_dir, run.step)
        elif self.parent is not None:
            try:  # the flow's ActNorms count as initialised once loaded (FrEIA's load hook)
                load_trainable(run.model, self.parent.path)
            except CheckpointError as exc:
                raise ConfigError(f"--init-from: {exc} (a --set changed the flow?)") from exc

    def _train(self, run: RunState, log: RunLog, end: int, wall_start: float) -> tuple[float, int]:
        """Steps until ``end``, validating, logging and saving on schedule.

        Returns:
            Seconds spent training and samples trained on (for the throughput).
        """
        cfg, ctx = self.cfg, run.ctx
        needs_init = run.step == 0  # the method's data-dependent init (ActNorm) on the first training batch
        train_module: torch.nn.Module = run.objective
        if ctx.enabled and not needs_init:
            train_module = wrap_ddp(run.objective, ctx)
        source = self._batches(run.train_set, run.model, ctx, run.amp_dtype) if run.step < end else None
        train_time, train_samples = 0.0, 0
        show = self.progress and ctx.is_main
        bar = tqdm(total=run.total, initial=run.step, desc="training", unit="step", disable=not show)
        while run.step < end and source is not None:
            epoch, skip = divmod(run.step, run.steps_per_epoch)
            tick = time.perf_counter()
            for batch in source.epoch(epoch, skip):
                if needs_init:
                    run.model.init_from_batch(batch)
                    needs_init = False
                    if ctx.enabled:
                        train_module = wrap_ddp(run.objective, ctx)
                loss, parts = self._train_step(
                    train_module, run.optimizer, run.scheduler, run.scaler, batch, run.step, ctx
                )
                run.step += 1
                now = time.perf_counter()
                train_time += now - tick
                train_samples += batch.size * ctx.world_size
                rate = batch.size * ctx.world_size / max(now - tick, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
                row: dict[str, Any] = {}
                if run.step % cfg.log_every == 0 or run.step == end:
                    row = log_row(run, epoch, loss, parts, rate, wall_start)
                val_due = (
                    run.step % cfg.val_every == 0 if cfg.val_every else run.step % run.steps_per_epoch == 0
                )
                if val_due or run.step == run.total:
                    row = {**(row or {"step": run.step, "epoch": epoch}), **self._validate(run)}
                if row:
                    log.write(row)
                if run.step % cfg.checkpoint_every == 0 or run.step == end:
                    self._save_state(run, epoch)
                if run.step >= end:
                    break
                tick = time.perf_counter()
        bar.close()
        return train_time, train_samples

    def _validate(self, run: RunState) -> dict[str, Any]:
        """Scores the val split, calibrates, saves the best checkpoint(s); returns the log columns."""
        cfg, main = self.cfg, run.ctx.is_main
        result = validate(
            run.model,
            run.valset,
            run.ctx,
            cfg.target_fpr,
            cfg.batch_size,
            run.amp_dtype,
            cfg.image_target_fpr,
        )
        run.history.append({"step": run.step, **result.metrics, "threshold": result.threshold})
        if is_better(result, run.best):
            run.best = {"ap": result.metrics["ap"], "step": run.step, "metrics": result.metrics}
            run.best["threshold"] = result.threshold
            run.best["image_threshold"] = result.image_threshold
            if main:
                save_best(
                    self.run_dir,
                    run.model,
                    result.threshold,
                    build_provenance(cfg, run.data, result, run.step, run.parent),
                    image_threshold=result.image_threshold,
                )
            barrier(run.ctx)
        if cfg.checkpoint_per_metric:
            for name in improved(result.metrics, run.per_metric, run.step):
                if main:
                    prov = build_provenance(cfg, run.data, result, run.step, run.parent)
                    save_best(
                        self.run_dir,
                        run.model,
                        result.threshold,
                        prov,
                        name=name,
                        image_threshold=result.image_threshold,
                    )
            barrier(run.ctx)
        return val_columns(result)

    def _save_state(self, run: RunState, epoch: int) -> None:
        """The resumable state (rank 0 writes, everyone waits)."""
        if run.ctx.is_main:
            extra = {"best": run.best, "epoch": epoch, "per_metric": run.per_metric}
            save_training_state(
                self.run_dir,
                run.step,
                run.model,
                run.optimizer,
                run.scheduler,
                run.scaler,
                extra,
                run.extra_modules,
            )
        barrier(run.ctx)

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
        return train_step(
            module, optimizer, scheduler, scaler, batch, generator, self.cfg.optim.grad_clip, step
        )
