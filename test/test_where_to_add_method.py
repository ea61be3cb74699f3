"""ARCHITECTURE.md "Where to add: a method", proven: one registered class trained, saved, loaded, exported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from train_support import make_tiny_data, tiny_train_dict

from flowclas_ros.config_io import from_dict
from flowclas_ros.export.onnx_export import export_onnx
from flowclas_ros.model import FlowCLAS, load_checkpoint
from flowclas_ros.model.checkpoint_meta import CheckpointError
from flowclas_ros.model.features import FeatureBatch, TrainingObjective
from flowclas_ros.model.method import (
    AnomalyMethod,
    MethodError,
    create_method,
    register_method,
    registered_methods,
    unregister_method,
)
from flowclas_ros.model.random_checkpoint import random_checkpoint, random_config
from flowclas_ros.runtime.torch_backend import TorchBackend
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.loop import Trainer

torch.set_num_threads(1)

NAME = "feature_gauss"


class FeatureGauss(AnomalyMethod):
    """A diagonal Gaussian over the backbone features: score = mean squared z-score of a cell."""

    def build_head(self, channels: int) -> None:
        self.mu = nn.Parameter(torch.zeros(channels))
        self.log_sigma = nn.Parameter(torch.zeros(channels))

    def cell_scores(self, feats: torch.Tensor) -> torch.Tensor:
        z = (feats - self.mu.view(1, -1, 1, 1)) * torch.exp(-self.log_sigma).view(1, -1, 1, 1)
        return 0.5 * (z**2).mean(dim=1) + self.log_sigma.mean()  # per-channel Gaussian NLL, up to a constant

    def objective(self, loss, seg, amp_dtype) -> TrainingObjective:
        return GaussNLL(self)


class GaussNLL(TrainingObjective):
    """Mean NLL of the inlier cells of the mixed images (pasted outliers and padding left out)."""

    def __init__(self, method: FeatureGauss):
        super().__init__()
        self.method = method

    def forward(self, batch: FeatureBatch, generator: torch.Generator):
        cells = self.method.cell_scores(batch.mixed)
        loss = cells[batch.mixed_mask == 0].mean()
        return loss, {"nll": loss.detach()}


@pytest.fixture
def dummy_method():
    register_method(NAME)(FeatureGauss)
    yield
    unregister_method(NAME)


def test_flowclas_is_the_registered_default():
    assert registered_methods()[0] == "flowclas"
    assert type(create_method(random_config(), warn_random_backbone=False)) is FlowCLAS


def test_a_registered_method_trains_checkpoints_and_loads(dummy_method, tmp_path):
    data = make_tiny_data(tmp_path / "data", seed=5)
    raw = tiny_train_dict(data)
    raw["model"]["method"] = NAME
    cfg = from_dict(TrainConfig, {**raw, "steps": 3, "checkpoint_every": 3, "val_every": 3})
    summary = Trainer(cfg, tmp_path / "run", progress=False).run()
    assert np.isfinite(summary.history[-1]["ap"])
    assert json.loads((summary.checkpoint / "config.json").read_text())["model"]["method"] == NAME
    loaded = load_checkpoint(summary.checkpoint)
    assert isinstance(loaded.model, FeatureGauss) and loaded.config.method == NAME
    assert set(loaded.model.stored_state()) == {"mu", "log_sigma"}  # the checkpoint keys: the head only
    assert float(loaded.model.mu.detach().abs().max()) > 0  # trained: the loss moved the mean off zero
    image = np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8)
    score = TorchBackend(loaded).predict([image])[0].score_map
    assert score.shape == (56, 56) and np.isfinite(score).all()
    report = export_onnx(loaded, tmp_path / "model.onnx")  # traces the method's export graph, checks ORT
    assert report.verification.max_abs_diff <= report.verification.tolerance


def test_a_method_name_is_registered_once(dummy_method):
    with pytest.raises(ValueError, match="registered already"):
        register_method(NAME)(FeatureGauss)


def test_an_unknown_method_is_an_error_naming_the_key(tmp_path):
    cfg = random_config()
    cfg.method = "nope"
    with pytest.raises(
        MethodError, match=r"model.method: 'nope' is not a registered method \(methods: flowclas"
    ):
        create_method(cfg)
    ckpt = random_checkpoint(tmp_path / "ckpt", input_size=(56, 56))
    config = json.loads((ckpt / "config.json").read_text())
    assert "method" not in config["model"]  # FlowCLAS checkpoints keep their pre-seam bytes
    config["model"]["method"] = "nope"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"config.json: model.method: 'nope' is not a registered method"
    ):
        load_checkpoint(ckpt)
