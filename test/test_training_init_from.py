"""``flowclas-train --init-from CKPT``: fine-tuning a checkpoint on a recording (issue 24).

The command shape is the one field learning (issue 25) runs:
``flowclas-train --config C --init-from CKPT --set data.train=BAG --set data.bag.image_topic=T
--set steps=N --set data.val= --out RUN``, then reads ``RUN/checkpoint/`` and ``RUN/log.csv``.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from bag_support import FRONT_TOPIC, two_topic_bag
from safetensors.torch import load_file
from train_support import make_tiny_data, tiny_train_dict

from flowclas_ros.config_io import ConfigError, from_dict
from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity
from flowclas_ros.training.cli import main as train_main
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.init_from import load_config
from flowclas_ros.training.loop import Trainer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A 2-step checkpoint trained on a folder (site A), and the YAML config it was trained with."""
    root = tmp_path_factory.mktemp("site_a")
    make_tiny_data(root / "data", seed=3)
    cfg = {**tiny_train_dict(root / "data"), "steps": 2, "val_every": 2}
    (root / "site.yaml").write_text(yaml.safe_dump(cfg))
    Trainer(from_dict(TrainConfig, cfg), root / "run", progress=False).run()
    two_topic_bag(root / "bag")
    return root


def learn_command(parent, run, *extra):
    return [
        "--config", str(parent / "site.yaml"),
        "--init-from", str(parent / "run" / "checkpoint"),
        "--set", f"data.train={parent / 'bag'}",
        "--set", f"data.bag.image_topic={FRONT_TOPIC}",
        "--set", "steps=2",
        "--set", "data.val=",
        "--out", str(run),
        *extra,
    ]  # fmt: skip


def test_fine_tuning_starts_from_the_parent_weights_and_names_parent_and_recording(parent, tmp_path, capsys):
    run = tmp_path / "run"
    # A vanishing learning rate: the result must still be the parent's weights, not a fresh init.
    rc = train_main(
        learn_command(parent, run, "--set", "optim.lr=1.0e-12", "--set", "threads=1", "--no-progress")
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    report = json.loads(out.out.strip().splitlines()[-1])
    assert report["init_from"] == str(parent / "run" / "checkpoint") and report["step"] == 2
    old = load_file(str(parent / "run" / "checkpoint" / "flow.safetensors"))
    new = load_file(str(run / "checkpoint" / "flow.safetensors"))
    assert old.keys() == new.keys()
    assert all(torch.allclose(old[k].float(), new[k].float(), atol=1e-6) for k in old)
    meta = json.loads((run / "checkpoint" / "config.json").read_text())
    prov = meta["provenance"]
    identity = read_checkpoint_identity(parent / "run" / "checkpoint")
    assert prov["parent"]["sha256"] == identity.sha256
    assert prov["parent"]["path"] == str((parent / "run" / "checkpoint").resolve())
    (source,) = prov["training_data"]["sources"]
    assert (source["kind"], source["topic"], source["messages"], source["kept"]) == (
        "bag",
        FRONT_TOPIC,
        40,
        5,
    )
    assert source["train"] + source["val"] == 5 and source["val"] >= 1
    assert meta["threshold"] is not None and meta["image_threshold"] is not None  # recalibrated on the bag
    assert meta["model"] == json.loads(identity.config_text)["model"]  # the parent's model config
    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2] and all(r["loss"] for r in rows)


def test_the_model_comes_from_the_checkpoint_and_set_overrides_it(parent, tmp_path):
    ckpt = parent / "run" / "checkpoint"
    cfg, found = load_config(parent / "site.yaml", ["model.score.blur_sigma=2.5"], ckpt)
    assert found.sha256 == read_checkpoint_identity(ckpt).sha256
    assert cfg.model.flow == read_checkpoint_identity(ckpt).config.flow and cfg.model.score.blur_sigma == 2.5


def test_a_checkpoint_with_another_backbone_or_input_size_is_a_one_line_error(parent, tmp_path, capsys):
    ckpt = parent / "run" / "checkpoint"
    cfg = yaml.safe_load((parent / "site.yaml").read_text())
    cfg["model"]["preprocess"]["input_size"] = [112, 112]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"input_size: checkpoint \[56, 56\], the config \[112, 112\]\)"):
        load_config(tmp_path / "other.yaml", [], ckpt)
    with pytest.raises(
        ConfigError, match=r"differs from --set's \(model.backbone.name: checkpoint vit_small_"
    ):
        load_config(parent / "site.yaml", ["model.backbone.name=vit_base_patch14_dinov2"], ckpt)
    # a --set that matches the checkpoint settles a config file written for another size
    cfg, _ = load_config(tmp_path / "other.yaml", ["model.preprocess.input_size=[56,56]"], ckpt)
    assert cfg.model.preprocess.input_size == (56, 56)
    rc = train_main(learn_command(parent, tmp_path / "r", "--set", "model.preprocess.input_size=[112,112]"))
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "input_size: checkpoint [56, 56], --set [112, 112]); fine-tuning keeps the checkpoint's" in err
    rc = train_main(learn_command(parent, tmp_path / "r2", "--set", "model.flow.steps=3"))
    err = capsys.readouterr().err
    assert rc == 2 and "--init-from:" in err and "flow.safetensors" in err and "Traceback" not in err
    assert (
        train_main([*learn_command(parent, tmp_path / "r3")[:2], "--init-from", str(tmp_path), "--out", "x"])
        == 2
    )
    assert "config.json: missing" in capsys.readouterr().err


def test_a_run_dir_with_a_training_state_resumes_instead_of_starting_over(parent, tmp_path):
    run = tmp_path / "run"
    assert train_main(learn_command(parent, run, "--stop-after", "1", "--no-progress")) == 0
    assert train_main(learn_command(parent, run, "--no-progress")) == 0
    with open(run / "log.csv", newline="") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2]
