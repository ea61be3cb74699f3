"""Loading the official recipes in tests, and generated Cityscapes- / COCO- / ALLO-like folders.

The recipes use model keys that issue 14 ("authors") adds (the Rein backbone,
``flow.variant``, ``preprocess.resize`` / ``padding``). Until those land,
:func:`load_recipe` strips the keys the dataclasses do not know yet and says
which; the tests that need them skip with that list as the reason.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowclas_ros.config_io import apply_overrides, from_dict, read_mapping
from flowclas_ros.data.images.folder import write_rgb
from flowclas_ros.model.config import BackboneConfig, FlowConfig, PreprocessConfig
from flowclas_ros.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "config" / "train"
# (dotted key, dataclass that must have the field) agreed in /work/notes/CONTRACTS.md
CONTRACT_KEYS = (
    ("model.backbone.rein_file", BackboneConfig),
    ("model.flow.variant", FlowConfig),
    ("model.preprocess.resize", PreprocessConfig),
    ("model.preprocess.padding", PreprocessConfig),
)


PLAIN_DINOV2 = {
    "rein_dinov2_vitl14": "vit_large_patch14_dinov2",
    "rein_dinov2_vitb14": "vit_base_patch14_dinov2",
}


def missing_contract_keys() -> list[str]:
    """The agreed issue-14 keys our dataclasses do not have yet."""
    names = {cls: {f.name for f in dataclasses.fields(cls)} for _, cls in CONTRACT_KEYS}
    return [key for key, cls in CONTRACT_KEYS if key.rsplit(".", 1)[1] not in names[cls]]


def recipe_mapping(name: str) -> tuple[dict[str, Any], list[str]]:
    """The recipe as a dict with not-yet-supported contract keys removed, and the removed keys."""
    data = read_mapping(CONFIGS / f"{name}.yaml")
    stripped = missing_contract_keys()
    for key in stripped:
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    if "model.backbone.rein_file" in stripped:  # no Rein backbone yet: plain DINOv2 of the same size
        backbone = data["model"]["backbone"]
        backbone["name"] = PLAIN_DINOV2.get(backbone["name"], backbone["name"])
    return data, stripped


def load_recipe(name: str, overrides: list[str] | None = None) -> tuple[TrainConfig, list[str]]:
    """The recipe as a TrainConfig (plus overrides) and the contract keys that had to be stripped."""
    data, stripped = recipe_mapping(name)
    return from_dict(TrainConfig, apply_overrides(data, overrides or [])), stripped


def onecycle_expected(step: int, total: int, lr: float, linear_warmup: bool) -> tuple[float, float]:
    """OneCycle by hand: 30 % warm-up from lr/25, cosine to lr/25/1e4; beta1 0.95 -> 0.85 -> 0.95."""
    start, floor = lr / 25.0, lr / 25.0 / 1e4
    end_warm = 0.3 * total - 1
    if step <= end_warm:
        pct = step / end_warm
        w = pct if linear_warmup else (1 - math.cos(math.pi * pct)) / 2
        return start + (lr - start) * w, 0.95 + (0.85 - 0.95) * w
    pct = (step - end_warm) / (total - 1 - end_warm)
    w = (1 + math.cos(math.pi * pct)) / 2  # 1 -> 0
    return floor + (lr - floor) * w, 0.95 + (0.85 - 0.95) * w


def _texture(rng: np.random.Generator, h: int, w: int, base: tuple[int, int, int]) -> np.ndarray:
    noise = rng.normal(0, 12, (h, w, 3))
    return np.clip(np.asarray(base, np.float64) + noise, 0, 255).astype(np.uint8)


def make_cityscapes(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """Official-layout Cityscapes train split: road / sky / car label ids plus void (ego vehicle, 1)."""
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        img_dir = root / "leftImg8bit" / "train" / "aachen"
        lab_dir = root / "gtFine" / "train" / "aachen"
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        labels = np.full((h, w), 7, np.uint8)  # road
        labels[: h // 3] = 23  # sky
        labels[h // 3 : h // 2, w // 4 : w // 2] = 26  # car
        labels[-3:] = 1  # ego vehicle (void)
        colours = {7: (90, 90, 90), 23: (110, 160, 220), 26: (30, 30, 140), 1: (10, 10, 10)}
        image = np.zeros((h, w, 3), np.uint8)
        for label, colour in colours.items():
            image[labels == label] = _texture(rng, h, w, colour)[labels == label]
        stem = f"aachen_{i:06d}_000019"
        write_rgb(img_dir / f"{stem}_leftImg8bit.png", image)
        cv2.imwrite(str(lab_dir / f"{stem}_gtFine_labelIds.png"), labels)
    return root


def make_coco(root: Path, sizes: list[tuple[int, int]], meta_ood: bool, seed: int = 1) -> Path:
    """COCO-like OE folder: a bright blob per image; Meta-OoD layout (254 = object) or images/ + masks/."""
    rng = np.random.default_rng(seed)
    img_dir, mask_dir = (
        (root / "train2017", root / "ood_seg_train2017") if meta_ood else (root / "images", root / "masks")
    )
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        obj = ((yy - h / 2) / (0.35 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2 < 1
        image = _texture(rng, h, w, (60, 120, 60))
        image[obj] = _texture(rng, h, w, (240, 40, 200))[obj]
        mask = np.where(obj, 254 if meta_ood else 1, 0).astype(np.uint8)
        name = f"{i + 1:012d}"
        cv2.imwrite(str(img_dir / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(mask_dir / f"{name}.png"), mask)
    return root


def make_anomaly_folder(root: Path, sizes: list[tuple[int, int]], anomaly_id: int = 1, seed: int = 2) -> Path:
    """Folder dataset with masks: grey ground, one magenta square labelled ``anomaly_id``, 255 border."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        image = _texture(rng, h, w, (100, 100, 100))
        mask = np.zeros((h, w), np.uint8)
        y, x = h // 3, w // 3
        image[y : y + h // 4, x : x + w // 4] = (230, 30, 210)
        mask[y : y + h // 4, x : x + w // 4] = anomaly_id
        mask[:, :2] = 255
        write_rgb(root / "images" / f"f{i}.png", image)
        cv2.imwrite(str(root / "masks" / f"f{i}.png"), mask)
    return root


def make_allo(root: Path, seed: int = 3) -> Path:
    """ALLO-like folder datasets: train (semantic ids 0..7 and 255, no anomaly), val with id 8 anomalies."""
    rng = np.random.default_rng(seed)
    train = root / "train"
    (train / "images").mkdir(parents=True, exist_ok=True)
    (train / "masks").mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate([(60, 120), (70, 130), (50, 100), (60, 120)]):  # one smaller than the crop
        image = _texture(rng, h, w, (40, 40, 50))
        image[h // 2 :] = _texture(rng, h - h // 2, w, (150, 150, 150))
        mask = np.where(np.arange(h)[:, None] < h // 2, 0, 3).repeat(w, axis=1).astype(np.uint8)
        mask[:2] = 255
        write_rgb(train / "images" / f"t{i}.png", image)
        cv2.imwrite(str(train / "masks" / f"t{i}.png"), mask)
    make_anomaly_folder(root / "val", [(56, 112), (56, 112), (70, 98)], anomaly_id=8, seed=seed + 1)
    return root
