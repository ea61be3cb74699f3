"""Shared pieces of the training tests: a tiny generated dataset and a tiny training config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset


def make_tiny_data(root: Path, seed: int) -> Path:
    """6 train / 3 val frames of 56x56 generated into ``root``."""
    generate_dataset(
        root,
        seed=seed,
        counts={"train": 6, "val": 3, "test": 0},
        cfg=SceneConfig(size=(56, 56)),
        progress=False,
    )
    return root


def tiny_train_dict(root: Path) -> dict[str, Any]:
    """A training config (as YAML gives it) for unit tests: ViT-S at 56x56, 2 flow steps."""
    return {
        "model": {
            "backbone": {"name": "vit_small_patch14_dinov2", "weights": "none"},
            "flow": {"steps": 2, "proj_dim": 16, "hidden_ratio": 0.25},
            "preprocess": {"input_size": [56, 56]},
        },
        "data": {"root": str(root), "train": "train", "val": "val"},
        "oe": {"area_range": [0.05, 0.2]},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "batch_size": 2,
        "num_workers": 0,
        "log_every": 1,
    }
