"""Calibration on the validation split: image threshold at a target image FPR; VL4AD fusion statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_support import make_tiny_data, tiny_train_dict

from flowclas_ros.config_io import from_dict
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.model import load_checkpoint
from flowclas_ros.model.vl4ad.fusion import FusionConfig
from flowclas_ros.runtime.torch_backend import TorchBackend
from flowclas_ros.training.calibration import image_threshold_at_fpr
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.loop import Trainer

torch.set_num_threads(1)

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def test_image_threshold_flags_at_most_the_target_share_of_normal_images():
    scores = np.random.default_rng(0).permutation(np.arange(100, dtype=np.float64))
    for fpr, flagged in [(0.05, 5), (0.01, 1), (0.0, 0), (0.999, 99)]:
        threshold = image_threshold_at_fpr(scores, fpr)
        assert int((scores >= threshold).sum()) == flagged, fpr
    few = np.array([0.3, 0.9, 0.5])  # fewer than 1 / fpr images: a margin above the highest
    threshold = image_threshold_at_fpr(few, 0.01)
    assert 0.9 + 0.5e-4 * 0.9 < threshold < 0.9 + 2e-4 and float(np.float32(threshold)) == threshold
    assert image_threshold_at_fpr(np.empty(0), 0.01) is None


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("calib_data"), seed=5)


def test_fused_training_calibrates_fusion_and_thresholds_on_the_fused_score(tiny_data, tmp_path):
    raw = {**tiny_train_dict(tiny_data), "steps": 2, "checkpoint_every": 2, "val_every": 2}
    raw["model"]["text"] = {"model": "ViT-B-16", "weights": "none", "arch": TINY_CLIP, "prompt_set": "road"}
    raw["model"]["fusion"] = {"mode": "weighted", "weight": 0.5}
    raw["image_target_fpr"] = 0.0
    cfg = from_dict(TrainConfig, raw)
    summary = Trainer(cfg, tmp_path / "run", progress=False).run()
    loaded = load_checkpoint(summary.checkpoint)
    fusion = loaded.config.fusion
    default = FusionConfig(mode="weighted", weight=0.5)
    assert fusion.flow_norm != default.flow_norm and fusion.text_norm != default.text_norm
    assert loaded.threshold == summary.threshold and loaded.image_threshold == summary.image_threshold
    # Measured on what the deployed model outputs: the fused map of the torch backend.
    val = FolderDataset(tiny_data / "val", require_masks=True)
    images = [val.load_image(i) for i in range(len(val))]
    predictions = TorchBackend(loaded).predict(images)
    masks = np.stack([val.load_mask(i) for i in range(len(val))])
    inliers = np.stack([p.score_map for p in predictions])[masks == 0]
    fpr = float((inliers >= loaded.threshold).mean())
    assert 0.02 < fpr <= cfg.target_fpr + 1e-3, fpr
    normal = [p.image_score for p, m in zip(predictions, masks) if not (m == 1).any()]
    if normal:  # image_target_fpr 0: no normal val image reaches the image threshold
        assert loaded.image_threshold is not None and max(normal) < loaded.image_threshold
    else:
        assert loaded.image_threshold is None
