from __future__ import annotations

import hashlib

import pytest
import timm
import torch
from safetensors.torch import save_file

from flowclas_ros.model import BackboneConfig
from flowclas_ros.model.backbones import BackboneError, create_backbone

torch.set_num_threads(1)


def random_timm_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    net = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in net.state_dict().items()}


def to_official_dinov2(state: dict[str, torch.Tensor], chunks: int = 0) -> dict[str, torch.Tensor]:
    """Inverse of timm's DINOv2 conversion: the key layout of the torch-hub release."""
    out = dict(state)
    dim = state["cls_token"].shape[-1]
    out["mask_token"] = torch.randn(1, dim)
    if "reg_token" in out:  # timm folds the class position into cls_token; undo it
        cls_pos = torch.randn(1, 1, dim)
        out["register_tokens"] = out.pop("reg_token")
        out["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
        out["cls_token"] = state["cls_token"] - cls_pos
    if chunks:  # BlockChunk layout: blocks.<chunk>.<block>.
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        per_chunk = depth // chunks
        out = {
            (
                f"blocks.{int(k.split('.')[1]) // per_chunk}.{k.split('.', 1)[1]}"
                if k.startswith("blocks.")
                else k
            ): v
            for k, v in out.items()
        }
    return out


def assert_loaded(backbone, expected: dict[str, torch.Tensor]) -> None:
    got = backbone.vit.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_loads_timm_and_official_key_formats(tmp_path, name):
    state = random_timm_state(name)
    timm_file = tmp_path / "timm.safetensors"
    save_file(state, str(timm_file))
    official_file = tmp_path / "official.pth"
    torch.save(to_official_dinov2(state), official_file)
    for path in (timm_file, official_file):
        backbone = create_backbone(BackboneConfig(name=name, weights="file", weights_file=str(path)))
        assert_loaded(backbone, state)
        assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())


def test_loads_chunked_official_keys_and_checks_sha256(tmp_path):
    state = random_timm_state("vit_small_patch14_dinov2", seed=1)
    path = tmp_path / "chunked.pth"
    official = to_official_dinov2(state, chunks=4)
    assert "blocks.2.7.norm1.weight" in official
    torch.save(official, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = BackboneConfig(weights="file", weights_file=str(path), weights_sha256=digest)
    assert_loaded(create_backbone(cfg), state)
    cfg.weights_sha256 = "0" * 64
    with pytest.raises(BackboneError, match=r"chunked\.pth: sha256 is"):
        create_backbone(cfg)


def test_weight_file_errors_name_the_file(tmp_path):
    with pytest.raises(BackboneError, match=r"nothere\.safetensors: backbone\.weights_file not found"):
        create_backbone(BackboneConfig(weights="file", weights_file=str(tmp_path / "nothere.safetensors")))
    state = random_timm_state("vit_small_patch14_dinov2")
    del state["norm.weight"]
    state["blocks.0.extra"] = torch.zeros(1)
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(
        BackboneError, match=r"partial\.safetensors: .*missing: norm\.weight.*unexpected: blocks\.0\.extra"
    ):
        create_backbone(BackboneConfig(weights="file", weights_file=str(path)))
    with pytest.raises(BackboneError, match="not a timm model"):
        create_backbone(BackboneConfig(name="vit_nonexistent", weights="none"))
