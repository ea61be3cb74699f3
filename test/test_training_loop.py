"""End-to-end training on a tiny generated dataset (56x56 frames, random ViT-S/14, 2 flow steps)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_support import make_tiny_data, tiny_train_dict

from flowclas_ros.config_io import from_dict, to_dict
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.model import FlowCLAS, load_checkpoint
from flowclas_ros.model.flowclas.loss import nll_loss
from flowclas_ros.model.flowclas.objective import FlowCLASObjective
from flowclas_ros.runtime.torch_backend import TorchBackend
from flowclas_ros.training.batches import FeatureBatch
from flowclas_ros.training.checkpointing import find_latest_state
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.loop import Trainer
from flowclas_ros.training.optim import build_optimizer

torch.set_num_threads(1)


def tiny_config(root, **overrides) -> TrainConfig:
    data = {**tiny_train_dict(root), "steps": 4, "checkpoint_every": 2, "val_every": 2}
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(TrainConfig, data)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tiny_data"), seed=3)


def test_objective_finite_and_decreasing_on_a_fixed_batch():
    cfg = tiny_config("unused")
    model = FlowCLAS(cfg.model).train()
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(4, model.feature_dim, 4, 4, generator=gen)
    mixed_mask = torch.zeros(2, 4, 4, dtype=torch.uint8)
    mixed_mask[:, 1:3, 1:3] = 1
    mixed = feats[:2].clone()
    mixed[:, :, 1:3, 1:3] += 3.0  # pasted cells look different
    batch = FeatureBatch(mixed, feats[2:], mixed_mask, mixed_mask.clone())
    objective = FlowCLASObjective(model, cfg.loss)
    opt = build_optimizer(model, cfg.optim)
    losses = []
    for step in range(12):
        loss, parts = objective(batch, torch.Generator().manual_seed(step))
        assert torch.isfinite(loss) and parts["anchors_outlier"] == 8 and parts["anchors_inlier"] == 24
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    # NLL covers inlier cells of the mixed images only
    z, ljd = model.flow_forward(torch.cat([batch.mixed, batch.outlier]))
    expected = nll_loss(z[:2], ljd[:2], mixed_mask == 0, model.base.mean, model.base.log_sigma)
    torch.testing.assert_close(
        objective(batch, torch.Generator().manual_seed(0))[1]["nll"], expected.detach()
    )


def test_validation_scoring_matches_model_forward():
    cfg = tiny_config("unused")
    model = FlowCLAS(cfg.model).eval()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        feats = model.extract_features(model.pad_input(x)[0])
        torch.testing.assert_close(model.cells_to_pixels(model.cell_scores(feats), (56, 56)), model(x))


def read_log(run):
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_pool_cache_writes_calibrated_checkpoint_and_keeps_backbone_frozen(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, **{"cache.mode": "pool", "cache.pool_size": 2})
    run = tmp_path / "run"
    trainer = Trainer(cfg, run, progress=False)
    fresh = FlowCLAS(cfg.model)
    summary = trainer.run()
    assert summary.step == 4 and summary.checkpoint == run / "checkpoint"
    rows = read_log(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert rows[1]["val_ap"] and rows[3]["val_ap"]
    loaded = load_checkpoint(run / "checkpoint")
    assert loaded.threshold is not None and loaded.threshold == summary.threshold
    prov = loaded.provenance
    assert prov["backbone"]["name"] == "vit_small_patch14_dinov2" and prov["backbone"]["weights"] == "none"
    assert prov["training_data"]["train"].endswith("train") and prov["val_metrics"]["ap"] is not None
    assert prov["train_config"]["cache"]["mode"] == "pool" and prov["step"] == summary.best_step
    # backbone untouched (same seed -> same init) and never received gradients
    for (name, p_fresh), p_loaded in zip(
        fresh.backbone.named_parameters(), loaded.model.backbone.parameters()
    ):
        assert torch.equal(p_fresh, p_loaded), name
    # the threshold leaves ~target_fpr of the val inlier pixels above it (at the model input size)
    val = FolderDataset(tiny_data / "val", require_masks=True)
    images = [val.load_image(i) for i in range(len(val))]
    maps = [p.score_map for p in TorchBackend(loaded).predict(images)]
    masks = np.stack([val.load_mask(i) for i in range(len(val))])
    scores = np.stack(maps)[masks == 0]
    fpr = float((scores >= loaded.threshold).mean())
    assert 0.02 < fpr <= cfg.target_fpr + 1e-3


def test_backbone_gets_no_gradient_during_training(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, steps=2, val_every=0)
    seen = []

    class Spy(Trainer):
        def _train_step(self, module, *args, **kwargs):
            out = super()._train_step(module, *args, **kwargs)
            model = module.model
            seen.append(
                (
                    all(p.grad is None and not p.requires_grad for p in model.backbone.parameters()),
                    any(p.grad is not None for p in model.flow.parameters()),
                )
            )
            return out

    Spy(cfg, tmp_path / "run", progress=False).run()
    assert seen == [(True, True), (True, True)]


def test_resume_is_exact(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, checkpoint_every=3)
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(cfg, straight, progress=False).run()
    first = Trainer(cfg, split, progress=False).run(stop_after=2)
    assert first.step == 2 and find_latest_state(split).name == "step_00000002"
    second = Trainer(cfg, split, progress=False).run()
    assert second.resumed_from == 2 and second.step == 4
    a = load_file(str(find_latest_state(straight) / "model.safetensors"))
    b = load_file(str(find_latest_state(split) / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    opt_a = torch.load(find_latest_state(straight) / "optim.pt", weights_only=True)
    opt_b = torch.load(find_latest_state(split) / "optim.pt", weights_only=True)
    for sa, sb in zip(opt_a["optimizer"]["state"].values(), opt_b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    assert opt_a["scheduler"] == opt_b["scheduler"]
    assert [r["loss"] for r in read_log(straight)] == [r["loss"] for r in read_log(split)]
    assert (
        json.loads((straight / "checkpoint" / "config.json").read_text())["threshold"]
        == json.loads((split / "checkpoint" / "config.json").read_text())["threshold"]
    )
    # a finished run resumes to a no-op
    again = Trainer(cfg, split, progress=False).run()
    assert again.step == 4 and again.resumed_from == 4


def test_resume_refuses_a_different_model(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, steps=2)
    Trainer(cfg, tmp_path / "run", progress=False).run(stop_after=1)
    other = tiny_config(tiny_data, steps=2, **{"model.flow.steps": 3})
    with pytest.raises(Exception, match="different model config"):
        Trainer(other, tmp_path / "run", progress=False).run()
    assert to_dict(cfg.model) != to_dict(other.model)
