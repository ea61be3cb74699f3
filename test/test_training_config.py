from __future__ import annotations

from pathlib import Path

import pytest
import torch
from recipe_support import load_recipe

from flowclas_ros.config_io import ConfigError, load
from flowclas_ros.data.outliers.exposure import OutlierExposure
from flowclas_ros.model import BackboneConfig, FlowCLAS, FlowConfig, ModelConfig
from flowclas_ros.training.cli import main
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.datasets import prepare_data
from flowclas_ros.training.distributed import DistContext
from flowclas_ros.training.optim import WarmupCosine, build_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "config" / "train"


@pytest.mark.parametrize("name", ["demo", "mvtec_clflow"])
def test_shipped_configs_load_strictly(name):
    # allo / cityscapes_coco: test/test_training_recipes.py (they need the issue-14 model keys)
    cfg = load(TrainConfig, CONFIGS / f"{name}.yaml")
    assert cfg.loss.alpha == (1e-5 if name == "demo" else 1e-6) and cfg.loss.temperature == 0.1
    assert cfg.target_fpr == 0.05


@pytest.mark.parametrize(
    "name,key,layout",
    [
        ("allo", "data.train", "images/"),
        ("cityscapes_coco", "data.train", "leftImg8bit"),
        ("mvtec_clflow", "data.train", "train/good"),
    ],
)
def test_placeholder_paths_fail_early_naming_key_and_layout(name, key, layout):
    cfg = load_recipe(name)[0] if name != "mvtec_clflow" else load(TrainConfig, CONFIGS / f"{name}.yaml")
    with pytest.raises(ConfigError) as info:
        prepare_data(cfg.data, DistContext(), progress=False)
    assert key in str(info.value) and layout in str(info.value)


def test_coco_oe_folder_placeholder_fails_with_layout(tmp_path):
    cfg = load_recipe("cityscapes_coco")[0]
    with pytest.raises(ConfigError) as info:
        OutlierExposure(cfg.oe)
    assert "oe.folder" in str(info.value) and "masks" in str(info.value)


def test_cli_rejects_unknown_key_with_its_name(tmp_path, capsys):
    status = main(
        ["--config", str(CONFIGS / "demo.yaml"), "--set", "optim.learning_rate=1", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "optim.learning_rate" in err and err.startswith("flowclas-train: error:")
    assert len(err.strip().splitlines()) == 1


def test_cli_names_missing_train_folder(tmp_path, capsys):
    args = ["--config", str(CONFIGS / "demo.yaml"), "--out", str(tmp_path / "run")]
    args += ["--set", f"data.root={tmp_path / 'nothing'}", "--set", "data.generate.enabled=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data.train" in err and "images/" in err
    assert not (tmp_path / "run").exists()  # nothing written on bad input


def test_cli_rejects_bad_values(tmp_path, capsys):
    assert (
        main(["--config", str(CONFIGS / "demo.yaml"), "--set", "target_fpr=2", "--out", str(tmp_path)]) == 2
    )
    assert "target_fpr" in capsys.readouterr().err


def test_weight_decay_only_on_projection_head_weight():
    cfg = ModelConfig(backbone=BackboneConfig(weights="none"), flow=FlowConfig(steps=2, proj_dim=8))
    model = FlowCLAS(cfg)
    train_cfg = TrainConfig()
    opt = build_optimizer(model, train_cfg.optim)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == train_cfg.optim.weight_decay and plain["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [model.proj_head.weight.shape]
    assert decayed["params"][0] is model.proj_head.weight
    n_trainable = len(model.trainable_parameters())
    assert len(decayed["params"]) + len(plain["params"]) == n_trainable
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_warmup_then_cosine():
    sched = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    assert sched(0) == pytest.approx(0.1) and sched(9) == pytest.approx(1.0)
    assert sched(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert sched(110) == pytest.approx(0.1) and sched(500) == pytest.approx(0.1)
    values = [sched(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lam = torch.optim.lr_scheduler.LambdaLR(opt, sched)
    assert lam.state_dict()["lr_lambdas"][0] == {"warmup": 10, "total": 110, "min_ratio": 0.1}


def _png(path, value, shape=(8, 8, 3)):
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def test_mvtec_layout_and_held_out_validation(tmp_path):
    from flowclas_ros.config_io import from_dict
    from flowclas_ros.training.config import DataConfig
    from flowclas_ros.training.datasets import open_folder

    cat = tmp_path / "mvtec" / "bottle"
    for i in range(10):
        _png(cat / "train" / "good" / f"{i:03d}.png", i)
    _png(cat / "test" / "good" / "000.png", 1)
    _png(cat / "test" / "broken" / "000.png", 2)
    _png(cat / "ground_truth" / "broken" / "000_mask.png", 255, (8, 8))
    cfg = from_dict(DataConfig, {"root": str(tmp_path / "mvtec"), "layout": "mvtec", "train": "bottle"})
    data = prepare_data(cfg, DistContext(), progress=False)
    assert data.val_held_out and len(data.train) == 9 and len(data.val) == 1
    assert set(data.train.stems).isdisjoint(data.val.stems)
    test = open_folder(cfg, "bottle", "data.test", require_masks=True)
    masks = {stem: test.load_mask(i) for i, stem in enumerate(test.stems)}
    assert len(test) == 2 and test.has_masks
    assert sorted(int(m.max()) for m in masks.values()) == [0, 1]  # 255 -> 1; good -> zeros
    bad = from_dict(DataConfig, {"root": str(tmp_path / "mvtec"), "layout": "mvtec", "train": "cable"})
    with pytest.raises(ConfigError, match="data.train.*train/good"):
        prepare_data(bad, DistContext(), progress=False)
