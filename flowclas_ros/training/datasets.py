"""Resolving the configured folders and bags into datasets, failing early with the key and expected layout.

Also: the embedded synthetic dataset is generated when configured and
missing, a share of the training images can be held out for validation
(the last part of each recording's time, every k-th image of a folder), and
MVTec AD category folders are read in their own layout. Bags and lists of
sources: :mod:`flowclas_ros.training.sources`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.images.folder import LAYOUT_HINT, DatasetError, FolderDataset
from flowclas_ros.data.readers.benchmarks import MVTEC_LAYOUT, FileListDataset, open_mvtec
from flowclas_ros.data.readers.cityscapes import CityscapesDataset
from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset
from flowclas_ros.training.config import DataConfig
from flowclas_ros.training.distributed import DistContext, barrier
from flowclas_ros.training.sources import entries, hold_out, join, open_sources, resolve

__all__ = ["TrainData", "maybe_generate", "open_folder", "prepare_data", "resolve", "subset"]


def subset(data: FolderDataset, indices: Sequence[int]) -> FileListDataset:
    """The items ``indices`` of ``data`` as a new dataset."""
    return FileListDataset(
        data.root,
        [data.image_paths[i] for i in indices],
        [data.mask_paths[i] for i in indices],
        data.label_map,
        data.default_label,
        getattr(data, "zero_mask_if_missing", False),
        [data.stems[i] for i in indices],
    )


def mvtec_split(category: Path, split: str, key: str) -> FileListDataset:
    """MVTec AD ``train`` or ``test`` (``data.benchmarks.open_mvtec``); errors name ``key``."""
    try:
        return open_mvtec(category, split)
    except DatasetError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def open_folder(cfg: DataConfig, value: str, key: str, require_masks: bool = False) -> FolderDataset:
    """Opens a dataset folder (``folder`` or ``mvtec`` layout) or raises ConfigError naming ``key``."""
    path = resolve(cfg, value)
    if not value:
        hint = MVTEC_LAYOUT if cfg.layout == "mvtec" else f"{LAYOUT_HINT}, or a rosbag2 (see data.bag)"
        raise ConfigError(f"{key}: required; {hint}")
    if cfg.layout == "cityscapes" and key == "data.train":  # val / test sets stay in the folder layout
        try:
            return CityscapesDataset(path, cfg.train_split, key)
        except DatasetError as exc:
            raise ConfigError(str(exc)) from exc
    if cfg.layout == "mvtec":
        if not path.is_dir():
            raise ConfigError(f"{key}: folder {str(path)!r} not found; {MVTEC_LAYOUT}")
        return mvtec_split(path, "test" if require_masks else "train", key)
    if not path.is_dir():
        raise ConfigError(
            f"{key}: folder {str(path)!r} not found; {LAYOUT_HINT}, or a rosbag2 (folder with "
            "metadata.yaml, .db3 or .mcap)"
        )
    try:
        return FolderDataset(path, require_masks, cfg.label_map or None, cfg.default_label)
    except DatasetError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


@dataclass
class TrainData:
    """The resolved training and validation datasets.

    Attributes:
        train: Inlier training images.
        val: Validation images.
        val_held_out: True when ``val`` was split off ``train``.
        sources: One provenance entry per configured source (``kind`` bag or folder, path,
            counts; bags also topic and the frames kept, skipped and split), train first.
    """

    train: FolderDataset
    val: FolderDataset
    val_held_out: bool
    sources: list[dict[str, Any]] = field(default_factory=list)


def maybe_generate(cfg: DataConfig, ctx: DistContext, progress: bool) -> None:
    """Writes the embedded synthetic dataset into ``data.root`` if enabled and ``train`` is missing."""
    gen = cfg.generate
    if not gen.enabled:
        return
    if not cfg.root:
        raise ConfigError(
            "data.root: required when data.generate.enabled is true (the generator writes there)"
        )
    train = entries(cfg.train)
    if ctx.is_main and not (train and resolve(cfg, train[0]).is_dir()):
        counts = {"train": gen.n_train, "val": gen.n_val, "test": gen.n_test}
        try:
            generate_dataset(cfg.root, gen.seed, counts, SceneConfig(size=tuple(gen.size)), progress=progress)
        except ValueError as exc:
            raise ConfigError(f"data.generate: {exc}") from exc
    barrier(ctx)


def prepare_data(cfg: DataConfig, ctx: DistContext, progress: bool = True) -> TrainData:
    """Generates (if configured), checks and opens the train / val data (folders and bags).

    Raises:
        ConfigError: A folder or bag is missing or malformed; names the key and the expected layout.
    """
    maybe_generate(cfg, ctx, progress)
    if not entries(cfg.train):
        open_folder(cfg, "", "data.train")  # raises: required
    train = open_sources(cfg, "data.train", open_folder)
    if entries(cfg.val):
        needs_masks = cfg.layout == "mvtec" or cfg.val_anomalies == "masks"
        val = open_sources(cfg, "data.val", open_folder, require_masks=needs_masks)
        return TrainData(
            join([d for d, _ in train]), join([d for d, _ in val]), False, [s for _, s in train + val]
        )
    splits = [hold_out(part, desc, cfg.val_fraction, subset) for part, desc in train]
    return TrainData(join([t for t, _ in splits]), join([v for _, v in splits]), True, [s for _, s in train])
