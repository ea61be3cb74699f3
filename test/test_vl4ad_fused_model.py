"""The VL4AD scorer wired into FlowCLAS: one checkpoint, fusion off is the plain flow score."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flowclas_ros.model import FlowCLAS, ModelConfig, load_checkpoint, save_checkpoint
from flowclas_ros.model.config import BackboneConfig, FlowConfig, PreprocessConfig
from flowclas_ros.model.vl4ad.fusion import FusionConfig
from flowclas_ros.model.vl4ad.text_scorer import TextScorerConfig

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _config(mode: str) -> ModelConfig:
    return ModelConfig(
        backbone=BackboneConfig(weights="none"),
        flow=FlowConfig(steps=2),
        preprocess=PreprocessConfig(input_size=(56, 56)),
        text=TextScorerConfig(model="ViT-B-16", weights="none", arch=TINY_CLIP, prompt_set="planetary_rover"),
        fusion=FusionConfig(mode=mode, weight=0.5),
    )


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))


def test_fusion_off_is_exactly_the_flow_score(batch):
    fused = FlowCLAS(_config("off")).eval()
    plain_cfg = dataclasses.replace(_config("off"), text=None)
    plain = FlowCLAS(plain_cfg).eval()
    plain.load_state_dict(fused.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.equal(fused(batch), plain(batch))


def test_weighted_fusion_round_trips_through_one_checkpoint(tmp_path, batch):
    model = FlowCLAS(_config("weighted")).eval()
    with torch.no_grad():
        flow, text = model.score_components(batch)
        fused = model(batch)
    assert text is not None and text.shape == flow.shape == fused.shape
    assert torch.isfinite(fused).all() and not torch.equal(fused, flow)
    save_checkpoint(model, tmp_path / "ckpt", threshold=0.5)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.text is not None and loaded.config.text.prompts is not None
    with torch.no_grad():
        assert torch.equal(loaded.model(batch), fused)


def test_fused_model_exports_to_onnx_with_parity(tmp_path, batch):
    from flowclas_ros.export import export_onnx

    model = FlowCLAS(_config("max")).eval()
    save_checkpoint(model, tmp_path / "ckpt", threshold=0.5)
    report = export_onnx(tmp_path / "ckpt", tmp_path / "fused.onnx")
    assert report.path.is_file()
    import onnxruntime as ort

    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = batch[:1].numpy()
    (ort_out,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        torch_out = model(batch[:1]).numpy()
    assert abs(ort_out - torch_out).max() < 1e-4


def test_torch_backend_applies_the_same_fusion_as_the_model(batch):
    from flowclas_ros.runtime.torch_backend import TorchBackend

    model = FlowCLAS(_config("weighted")).eval()
    with torch.no_grad():
        expected = model(batch).numpy()
        flow_only, _ = model.score_components(batch)
    got = TorchBackend(model)._forward(batch.numpy())
    assert abs(got - expected).max() < 1e-6
    assert abs(got - flow_only.numpy()).max() > 1e-4  # the text score really contributes


def test_backend_prompt_switching_is_refused_without_a_text_scorer():
    from flowclas_ros.runtime.torch_backend import TorchBackend

    plain = TorchBackend(FlowCLAS(dataclasses.replace(_config("off"), text=None)))
    assert not plain.supports_prompts
    with pytest.raises(ValueError, match="no VL4AD text scorer"):
        plain.set_prompts("road")
    fused = TorchBackend(FlowCLAS(_config("weighted")))
    assert fused.supports_prompts
    assert fused.set_prompts("road") is True  # encoded once
    assert fused.set_prompts("road") is False  # same set: nothing re-encoded
