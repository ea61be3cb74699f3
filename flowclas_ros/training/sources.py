"""``data.train`` / ``data.val`` as a list of sources: folder datasets and rosbag2 recordings.

Each configured entry is a folder (docs/ARCHITECTURE.md layout, or the ``layout`` the config
names) or a bag (:mod:`flowclas_ros.training.bag_frames`). Several entries are concatenated
into one dataset; a single entry is returned as it is, so a plain folder config trains
exactly as before. Each source is described for the checkpoint's provenance (bag path,
topic and frame counts; folder path and image count).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.training.bag_frames import BagFrames, is_bag, read_bag_frames
from flowclas_ros.training.config import DataConfig


def resolve(cfg: DataConfig, value: str) -> Path:
    """A configured path, relative to ``data.root`` when that is set and the path is relative."""
    path = Path(value).expanduser()
    return path if path.is_absolute() or not cfg.root else Path(cfg.root).expanduser() / path


def entries(value: str | list[str] | None) -> list[str]:
    """The configured entries of ``data.train`` / ``data.val`` (a string is one entry; empty is none)."""
    if not value:
        return []
    return [value] if isinstance(value, str) else [v for v in value if v]


def key_of(key: str, index: int, count: int) -> str:
    """``data.train`` or, for list entries, ``data.train[i]`` (error messages name the entry)."""
    return key if count == 1 else f"{key}[{index}]"


class ConcatFrames(FolderDataset):
    """Several datasets (folders, bags) read as one, in the configured order."""

    def __init__(self, parts: Sequence[FolderDataset]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts]).tolist()
        self.root = self.parts[0].root
        self.stems = [stem for part in self.parts for stem in part.stems]
        self.label_map: dict[int, int] = {}
        self.default_label = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, index: int) -> tuple[FolderDataset, int]:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part], index - self.offsets[part]

    @property
    def has_masks(self) -> bool:
        """True if every part has masks for all its images."""
        return all(p.has_masks for p in self.parts)

    def load_image(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) of item ``index``."""
        part, local = self._locate(index)
        return part.load_image(local)

    def load_mask(self, index: int, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """Mask of item ``index`` (None for bag frames and folder images without one)."""
        part, local = self._locate(index)
        return part.load_mask(local, shape)


def join(parts: Sequence[FolderDataset]) -> FolderDataset:
    """One dataset over ``parts`` (the part itself when there is one)."""
    return parts[0] if len(parts) == 1 else ConcatFrames(parts)


def describe_folder(data: FolderDataset, key: str) -> dict[str, Any]:
    """Provenance entry of a folder source."""
    return {"kind": "folder", "key": key, "path": str(Path(data.root).resolve()), "images": len(data)}


def open_sources(
    cfg: DataConfig, key: str, open_folder, require_masks: bool = False
) -> list[tuple[FolderDataset, dict[str, Any]]]:
    """Opens every entry of ``data.train`` or ``data.val`` (``key``); returns (dataset, description) pairs.

    Args:
        cfg: The data config.
        key: ``data.train`` or ``data.val``.
        open_folder: ``(cfg, value, key, require_masks) -> FolderDataset`` for folder entries.
        require_masks: Folder entries need masks (validation with real anomalies).

    Raises:
        ConfigError: A bad entry, named by its key (``data.train[1]``), bag and topic.
    """
    values = entries(cfg.train if key == "data.train" else cfg.val)
    opened = []
    for i, value in enumerate(values):
        name = key_of(key, i, len(values))
        path = resolve(cfg, value)
        if cfg.layout == "folder" and is_bag(path):
            if require_masks:
                raise ConfigError(
                    f"{name}: bag {path} carries no masks for validation; set data.val_anomalies to oe "
                    "(Outlier Exposure pastes) or name a folder with masks/"
                )
            frames = read_bag_frames(path, cfg.bag, name)
            opened.append((frames, {"key": name, **frames.report.as_dict()}))
        else:
            data = open_folder(cfg, value, name, require_masks)
            opened.append((data, describe_folder(data, name)))
    role = key.split(".")[-1]
    for data, desc in opened:  # a held-out split rewrites both counts
        desc.update(train=0, val=0)
        desc[role] = len(data)
    return opened


def hold_out(
    part: FolderDataset, desc: dict[str, Any], val_fraction: float, subset
) -> tuple[FolderDataset, FolderDataset]:
    """Splits one training source: a recording by time (its last ``val_fraction``), a folder every k-th."""
    if isinstance(part, BagFrames):
        train, val = part.split_by_time(val_fraction, desc["key"])
        desc.update(train=len(train), val=len(val))
        return train, val
    every = max(2, round(1.0 / val_fraction))
    val_idx = [i for i in range(len(part)) if i % every == every - 1]
    train_idx = [i for i in range(len(part)) if i % every != every - 1]
    if not val_idx or not train_idx:
        raise ConfigError(
            f"data.val: empty, and {desc['key']} has only {len(part)} images, too few to hold out "
            f"data.val_fraction={val_fraction}; set data.val to a validation folder"
        )
    desc.update(train=len(train_idx), val=len(val_idx))
    return subset(part, train_idx), subset(part, val_idx)
