"""Resolving the configured data folders into datasets, failing early with the key and expected layout.

Also: the embedded synthetic dataset is generated when configured and
missing, a share of the training images can be held out for validation, and
MVTec AD category folders are read in their own layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.images.folder import LAYOUT_HINT, DatasetError, FolderDataset
from flowclas_ros.data.readers.benchmarks import MVTEC_LAYOUT, FileListDataset, open_mvtec
from flowclas_ros.data.readers.cityscapes import CityscapesDataset
from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset
from flowclas_ros.training.config import DataConfig
from flowclas_ros.training.distributed import DistContext, barrier


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


def resolve(cfg: DataConfig, value: str) -> Path:
    """A configured path, relative to ``data.root`` when that is set and the path is relative."""
    path = Path(value).expanduser()
    return path if path.is_absolute() or not cfg.root else Path(cfg.root).expanduser() / path


def open_folder(cfg: DataConfig, value: str, key: str, require_masks: bool = False) -> FolderDataset:
    """Opens a dataset folder (``folder`` or ``mvtec`` layout) or raises ConfigError naming ``key``."""
    path = resolve(cfg, value)
    if not value:
        raise ConfigError(f"{key}: required; {MVTEC_LAYOUT if cfg.layout == 'mvtec' else LAYOUT_HINT}")
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
        raise ConfigError(f"{key}: folder {str(path)!r} not found; {LAYOUT_HINT}")
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
    """

    train: FolderDataset
    val: FolderDataset
    val_held_out: bool


def maybe_generate(cfg: DataConfig, ctx: DistContext, progress: bool) -> None:
    """Writes the embedded synthetic dataset into ``data.root`` if enabled and ``train`` is missing."""
    gen = cfg.generate
    if not gen.enabled:
        return
    if not cfg.root:
        raise ConfigError(
            "data.root: required when data.generate.enabled is true (the generator writes there)"
        )
    if ctx.is_main and not resolve(cfg, cfg.train).is_dir():
        counts = {"train": gen.n_train, "val": gen.n_val, "test": gen.n_test}
        try:
            generate_dataset(cfg.root, gen.seed, counts, SceneConfig(size=tuple(gen.size)), progress=progress)
        except ValueError as exc:
            raise ConfigError(f"data.generate: {exc}") from exc
    barrier(ctx)


def prepare_data(cfg: DataConfig, ctx: DistContext, progress: bool = True) -> TrainData:
    """Generates (if configured), checks and opens the train / val data.

    Raises:
        ConfigError: A folder is missing or malformed; names the key and the expected layout.
    """
    maybe_generate(cfg, ctx, progress)
    train = open_folder(cfg, cfg.train, "data.train")
    if cfg.val:
        if cfg.layout == "mvtec":
            val = open_folder(cfg, cfg.val, "data.val", require_masks=True)
        else:
            val = open_folder(cfg, cfg.val, "data.val", require_masks=cfg.val_anomalies == "masks")
        return TrainData(train, val, val_held_out=False)
    every = max(2, round(1.0 / cfg.val_fraction))
    val_idx = [i for i in range(len(train)) if i % every == every - 1]
    train_idx = [i for i in range(len(train)) if i % every != every - 1]
    if not val_idx or not train_idx:
        raise ConfigError(
            f"data.val: empty, and data.train has only {len(train)} images, too few to hold out "
            f"data.val_fraction={cfg.val_fraction}; set data.val to a validation folder"
        )
    return TrainData(subset(train, train_idx), subset(train, val_idx), val_held_out=True)
