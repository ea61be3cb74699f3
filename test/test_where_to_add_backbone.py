"""ARCHITECTURE.md "Where to add: a backbone", proven: one decorated builder, then train, checkpoint, load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from train_support import make_tiny_data, tiny_train_dict

from flowclas_ros.config_io import from_dict
from flowclas_ros.model import load_checkpoint
from flowclas_ros.model.backbones import (
    BackboneError,
    FrozenBackbone,
    create_backbone,
    register_backbone,
    registered_families,
    unregister_backbone,
)
from flowclas_ros.model.config import BackboneConfig
from flowclas_ros.runtime.torch_backend import TorchBackend
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.loop import Trainer

torch.set_num_threads(1)

NAME = "dummy_patch8"


class PatchConv(FrozenBackbone):
    """An 8x8-patch convolution, seeded: the same weights on every build, as a named backbone must have."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 24, kernel_size=8, stride=8)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.1)
            self.conv.bias.zero_()
        self.feature_dim, self.patch_size, self.pad_multiple = 24, 8, 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture
def dummy_family():
    register_backbone("dummy", accepts=lambda name: name == NAME)(lambda cfg, warn: PatchConv())
    yield
    unregister_backbone("dummy")


def test_builtin_families_are_registered_in_order():
    assert registered_families()[:3] == ["rein_dinov2", "timm_vit", "timm_cnn"]


def test_a_registered_backbone_trains_checkpoints_and_loads(dummy_family, tmp_path):
    data = make_tiny_data(tmp_path / "data", seed=5)
    raw = tiny_train_dict(data)
    raw["model"]["backbone"] = {"name": NAME, "weights": "none"}
    cfg = from_dict(TrainConfig, {**raw, "steps": 2, "checkpoint_every": 2, "val_every": 2})
    summary = Trainer(cfg, tmp_path / "run", progress=False).run()
    loaded = load_checkpoint(summary.checkpoint)
    assert isinstance(loaded.model.backbone, PatchConv) and loaded.provenance["backbone"]["name"] == NAME
    image = np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8)
    score = TorchBackend(loaded).predict([image])[0].score_map
    assert score.shape == (56, 56) and np.isfinite(score).all()


def test_a_family_name_is_registered_once(dummy_family):
    with pytest.raises(ValueError, match="registered already"):
        register_backbone("dummy", accepts=lambda name: False)(lambda cfg, warn: PatchConv())


def test_unknown_names_list_the_families():
    expected = r"not a timm model nor a registered backbone \(families: rein_dinov2, "
    with pytest.raises(BackboneError, match=expected):
        create_backbone(BackboneConfig(name="no_such_backbone", weights="none"))
