"""The provenance a training run writes into its checkpoints' ``config.json``."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import flowclas_ros
from flowclas_ros.config_io import to_dict
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.datasets import TrainData
from flowclas_ros.training.logs import git_commit
from flowclas_ros.training.sources import entries, resolve
from flowclas_ros.training.validation import ValResult


def _roots(data: TrainData, role: str) -> str | list[str]:
    """The train (or val) source paths: one string for one source (the older form), else a list."""
    paths = [s["path"] for s in data.sources if s.get("key", "").startswith(f"data.{role}")]
    if not paths:
        root = getattr(data, role).root
        return str(Path(root).resolve())
    return paths[0] if len(paths) == 1 else paths


def build_provenance(
    cfg: TrainConfig, data: TrainData, result: ValResult, step: int, parent: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Provenance of a checkpoint saved at ``step`` with validation ``result``.

    Args:
        cfg: The run's config.
        data: The opened datasets and their source descriptions.
        result: Validation metrics of this checkpoint.
        step: Training step.
        parent: The ``--init-from`` checkpoint (``path``, ``sha256``, ...), or None for a fresh run.
    """
    backbone = cfg.model.backbone
    val = _roots(data, "val" if entries(cfg.data.val) else "train")
    if data.val_held_out:
        val = f"{val} (held out from train)" if isinstance(val, str) else [f"{v} (held out)" for v in val]
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
            "train": _roots(data, "train"),
            "n_train": len(data.train),
            "val": val,
            "n_val": len(data.val),
            "val_anomalies": result.metrics.get("mode"),
            "test": [str(resolve(cfg.data, t)) for t in cfg.data.test],
            "oe": cfg.oe.kind,
            "sources": data.sources,
        },
        "parent": parent,
        "val_metrics": result.metrics,
        "target_fpr": cfg.target_fpr,
        "image_target_fpr": cfg.image_target_fpr,
        "step": step,
        "train_config": to_dict(cfg),
        "git_commit": git_commit(),
        "flowclas_ros_version": flowclas_ros.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
