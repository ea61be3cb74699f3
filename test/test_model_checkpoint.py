from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from flowclas_ros.model import (
    CheckpointError,
    FlowCLAS,
    load_checkpoint,
    save_checkpoint,
)
from flowclas_ros.model.random_checkpoint import perturb_trainable, random_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = FlowCLAS(random_config(seed=5, blur_sigma=1.0)).eval()
    perturb_trainable(model, seed=5)
    path = save_checkpoint(
        model, tmp_path_factory.mktemp("ckpt") / "run", threshold=0.42, provenance={"data": "unit"}
    )
    return model, path


def _copy(src, dst):
    dst.mkdir()
    for file in src.iterdir():
        (dst / file.name).write_bytes(file.read_bytes())
    return dst


def test_round_trip_gives_bit_identical_scores(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "flow.safetensors"]
    loaded = load_checkpoint(path)
    assert loaded.threshold == pytest.approx(0.42)
    assert loaded.provenance == {"data": "unit"}
    assert loaded.config == model.cfg and len(loaded.sha256) == 64
    assert not loaded.model.training
    assert not any(k.startswith("backbone.") for k in load_file(str(path / "flow.safetensors")))
    x = torch.randn(2, 3, 50, 61)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert load_checkpoint(path).sha256 == loaded.sha256


def test_embedded_backbone_round_trip(tmp_path):
    model = FlowCLAS(random_config(seed=1)).eval()
    with torch.no_grad():
        model.backbone.vit.blocks[0].ls1.gamma.fill_(0.5)  # differs from a fresh random init
    path = save_checkpoint(model, tmp_path / "emb", embed_backbone=True)
    assert (path / "backbone.safetensors").is_file()
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.model.backbone.vit.blocks[0].ls1.gamma, model.backbone.vit.blocks[0].ls1.gamma)
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_truncated_safetensors_is_reported(saved, tmp_path):
    path = _copy(saved[1], tmp_path / "trunc")
    data = (path / "flow.safetensors").read_bytes()
    (path / "flow.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"trunc/flow\.safetensors: corrupt or truncated"):
        load_checkpoint(path)


def _edit_config(path, edit):
    meta = json.loads((path / "config.json").read_text())
    edit(meta)
    (path / "config.json").write_text(json.dumps(meta))


def test_unknown_config_key_is_reported(saved, tmp_path):
    path = _copy(saved[1], tmp_path / "unknown")
    _edit_config(path, lambda m: m["model"]["backbone"].update(colour="red"))
    with pytest.raises(
        CheckpointError, match=r"unknown/config\.json: unknown config key\(s\) model\.backbone\.colour"
    ):
        load_checkpoint(path)


def test_version_json_and_missing_file_errors(saved, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")
    path = _copy(saved[1], tmp_path / "ver")
    _edit_config(path, lambda m: m.update(version=99))
    with pytest.raises(CheckpointError, match=r"ver/config\.json: checkpoint version 99 is not supported"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"ver/config\.json: not valid JSON"):
        load_checkpoint(path)
    path = _copy(saved[1], tmp_path / "noflow")
    (path / "flow.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"noflow/flow\.safetensors: missing"):
        load_checkpoint(path)


def test_tensor_key_and_shape_mismatches_are_reported(saved, tmp_path):
    path = _copy(saved[1], tmp_path / "keys")
    state = load_file(str(path / "flow.safetensors"))
    del state["base.mean"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(path / "flow.safetensors"))
    with pytest.raises(
        CheckpointError,
        match=r"keys/flow\.safetensors: .*missing tensors: base\.mean; unexpected tensors: extra\.weight",
    ):
        load_checkpoint(path)
    path = _copy(saved[1], tmp_path / "shape")
    _edit_config(path, lambda m: m["model"]["flow"].update(proj_dim=8))
    with pytest.raises(CheckpointError, match=r"shape/flow\.safetensors: tensor proj_head\.\w+ has shape"):
        load_checkpoint(path)


@pytest.mark.parametrize("bad", ["../secret.safetensors", "/etc/passwd", "..", "sub/backbone.safetensors", 3])
def test_embedded_backbone_outside_the_checkpoint_is_rejected(tmp_path, bad):
    model = FlowCLAS(random_config(seed=1)).eval()
    path = save_checkpoint(model, tmp_path / "ckpt", embed_backbone=True)
    # A real safetensors file outside the directory: the loader must not even open it.
    (tmp_path / "secret.safetensors").write_bytes((path / "backbone.safetensors").read_bytes())
    _edit_config(path, lambda m: m.update(embedded_backbone=bad))
    with pytest.raises(CheckpointError, match=r"config\.json: embedded_backbone must be a file name inside"):
        load_checkpoint(path)


def test_image_threshold_round_trip_and_old_checkpoints(tmp_path):
    model = FlowCLAS(random_config()).eval()
    path = save_checkpoint(model, tmp_path / "new", threshold=0.5, image_threshold=1.25)
    assert json.loads((path / "config.json").read_text())["image_threshold"] == 1.25
    loaded = load_checkpoint(path)
    assert (loaded.threshold, loaded.image_threshold) == (0.5, 1.25)
    old = save_checkpoint(model, tmp_path / "old", threshold=0.5)  # no key at all, like old checkpoints
    assert "image_threshold" not in json.loads((old / "config.json").read_text())
    assert load_checkpoint(old).image_threshold is None
    _edit_config(old, lambda m: m.update(image_threshold="high"))
    with pytest.raises(CheckpointError, match="image_threshold must be a (finite )?number or null"):
        load_checkpoint(old)
