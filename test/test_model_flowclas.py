from __future__ import annotations

import numpy as np
import pytest
import torch

from flowclas_ros.model import BackboneConfig, FlowCLAS
from flowclas_ros.model.flowclas.anomaly_map import GaussianBlur, image_score
from flowclas_ros.model.flowclas.image_score import image_score_np
from flowclas_ros.model.flowclas.loss import nll_loss, supcon_loss
from flowclas_ros.model.random_checkpoint import perturb_trainable, random_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> FlowCLAS:
    net = FlowCLAS(random_config())
    perturb_trainable(net)
    return net.eval()


@pytest.mark.parametrize("batch,height,width", [(1, 50, 61), (3, 56, 56), (2, 29, 15)])
def test_score_map_has_input_shape_and_is_finite(model, batch, height, width):
    x = torch.randn(batch, 3, height, width)
    with torch.no_grad():
        score_map, scores = model.score(x)
    assert score_map.shape == (batch, height, width)
    assert scores.shape == (batch,)
    assert torch.isfinite(score_map).all()
    torch.testing.assert_close(scores, score_map.flatten(1).amax(dim=1))


def test_padding_is_cropped_not_resized(model):
    x = torch.randn(1, 3, 50, 61)
    padded, hw = model.pad_input(x)
    assert padded.shape[-2:] == (56, 70) and hw == (50, 61)
    assert torch.equal(padded[..., :50, :61], x) and padded[..., 50:, :].abs().sum() == 0
    with torch.no_grad():
        feats = model.extract_features(padded)
        assert feats.shape == (1, model.feature_dim, 4, 5)
        torch.testing.assert_close(model(x), model.score_features(feats, (50, 61)))


def test_same_seed_same_model_and_outputs_and_rng_untouched():
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    a = FlowCLAS(random_config(seed=3))
    assert torch.equal(torch.rand(1), expected_next)  # construction does not consume global RNG
    b = FlowCLAS(random_config(seed=3))
    c = FlowCLAS(random_config(seed=4))
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))


def test_training_step_never_touches_backbone():
    net = FlowCLAS(random_config())
    net.train()
    assert not net.backbone.training and net.flow.training
    backbone_before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    flow_before = {k: v.clone() for k, v in net.flow.state_dict().items()}
    optimizer = torch.optim.Adam(net.trainable_parameters(), lr=1e-2)
    x = torch.randn(2, 3, 42, 56)
    padded, _ = net.pad_input(x)
    feats = net.extract_features(padded)
    assert not feats.requires_grad
    z, log_jac_det = net.flow_forward(feats)
    inlier = torch.ones(z.shape[0], *z.shape[-2:], dtype=torch.bool)
    inlier[:, 0, 0] = False
    loss = nll_loss(z, log_jac_det, inlier, net.base.mean, net.base.log_sigma, reduction="mean")
    emb = net.project(z).permute(0, 2, 3, 1).reshape(-1, net.cfg.flow.proj_dim)
    labels = (~inlier).reshape(-1).long()
    loss = loss + supcon_loss(emb, labels, emb, labels, anchors_lead_contrast=True)
    loss.backward()
    optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in net.backbone.parameters())
    for name, tensor in net.backbone.state_dict().items():
        assert torch.equal(tensor, backbone_before[name]), name
    changed = [k for k, v in net.flow.state_dict().items() if not torch.equal(v, flow_before[k])]
    assert changed  # ActNorm init + optimizer moved the flow


def test_nll_map_sums_to_image_nll(model):
    z = torch.randn(2, model.feature_dim, 3, 4)
    log_det = torch.tensor([3.0, -1.0])
    per_cell = model.nll_map(z, log_det)
    full = torch.ones(2, 3, 4)
    total = nll_loss(z, log_det, full, model.base.mean, model.base.log_sigma)
    torch.testing.assert_close(per_cell.sum() / 2, total)


def test_nll_kind_is_negative_channel_mean_log_prob():
    net = FlowCLAS(random_config(kind="nll")).eval()
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        padded, _ = net.pad_input(x)
        z, _ = net.flow_forward(net.extract_features(padded))
        cells = -net.log_prob_map(z)
        up = torch.nn.functional.interpolate(cells[:, None], size=(28, 42), mode="bilinear")[:, 0]
        torch.testing.assert_close(net(x), up)


def test_fixed_pos_embed_matches_dynamic_and_can_be_undone(model):
    x = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        dynamic = model(x)
        model.backbone.fix_pos_embed((56, 70))
        try:
            fixed = model(x)
        finally:
            model.backbone.fix_pos_embed(None)
        again = model(torch.randn(1, 3, 42, 42))
    torch.testing.assert_close(fixed, dynamic)
    assert again.shape == (1, 42, 42)


def test_register_variant_and_multi_layer_features():
    cfg = random_config()
    cfg.backbone.name = "vit_small_patch14_reg4_dinov2"
    cfg.backbone.layers = [3, -1]
    net = FlowCLAS(cfg).eval()
    assert net.feature_dim == 2 * 384
    x = torch.randn(1, 3, 30, 30)
    with torch.no_grad():
        assert net.extract_features(net.pad_input(x)[0]).shape == (1, 768, 3, 3)
        net.backbone.fix_pos_embed((42, 42))
        fixed = net(x)
        net.backbone.fix_pos_embed(None)
        torch.testing.assert_close(fixed, net(x))


def test_cnn_backbone_multiscale():
    cfg = random_config()
    cfg.backbone = BackboneConfig(name="resnet18", weights="none", layers=[2, 3])
    net = FlowCLAS(cfg).eval()
    assert (net.patch_size, net.pad_multiple, net.feature_dim) == (8, 16, 128 + 256)
    x = torch.randn(2, 3, 50, 61)
    with torch.no_grad():
        assert net.extract_features(net.pad_input(x)[0]).shape == (2, 384, 8, 8)
        assert net(x).shape == (2, 50, 61)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_export_matches_torch(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        expected = model(x).numpy()
    model.backbone.fix_pos_embed((56, 70))
    try:
        torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), opset_version=17, dynamo=False)
    finally:
        model.backbone.fix_pos_embed(None)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, float(np.ptp(expected))))


def test_gaussian_blur_preserves_constants_and_mass():
    blur = GaussianBlur(1.5)
    const = torch.full((1, 9, 11), 0.3)
    torch.testing.assert_close(blur(const), const)
    impulse = torch.zeros(1, 21, 21)
    impulse[0, 10, 10] = 1.0
    out = blur(impulse)
    assert out.shape == impulse.shape
    torch.testing.assert_close(out.sum(), torch.tensor(1.0))
    assert out[0, 10, 10] < 0.1 and torch.equal(out[0], out[0].T)
    assert torch.equal(GaussianBlur(0.0)(impulse), impulse)


@pytest.mark.parametrize("kind", ["max", "mean", "p99"])
def test_image_score_torch_and_numpy_agree(kind):
    maps = torch.rand(2, 13, 17)
    got = image_score(maps, kind)
    for i in range(2):
        assert abs(float(got[i]) - image_score_np(maps[i].numpy(), kind)) < 1e-6


def test_raw_vit_features_without_input_norm(tmp_path):
    """backbone.norm=false + flow.input_norm=none: the patch scale reaches the flow; round-trips."""
    from flowclas_ros.model import load_checkpoint, save_checkpoint

    cfg = random_config()
    cfg.backbone.norm = False
    cfg.flow.input_norm = "none"
    raw_net = FlowCLAS(cfg).eval()
    normed_net = FlowCLAS(random_config()).eval()
    assert isinstance(raw_net.norm, torch.nn.Identity)
    assert not any(k.startswith("norm.") for k in raw_net.state_dict())
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        expected = raw_net.backbone.vit.forward_intermediates(
            x, indices=[-1], norm=False, output_fmt="NCHW", intermediates_only=True
        )[0]
        torch.testing.assert_close(raw_net.extract_features(x), expected)

        # A per-token LayerNorm hides a contrast change; the raw stream keeps it.
        def contrast_gain(net: FlowCLAS) -> torch.Tensor:
            return net.extract_features(3 * x).std(dim=1) / net.extract_features(x).std(dim=1)

        raw_ratio, normed_ratio = contrast_gain(raw_net), contrast_gain(normed_net)
    assert float(raw_ratio.mean()) > 2.0
    assert float((normed_ratio - 1).abs().max()) < 0.05
    perturb_trainable(raw_net)
    path = save_checkpoint(raw_net, tmp_path / "raw")
    loaded = load_checkpoint(path)
    assert loaded.config.backbone.norm is False and loaded.config.flow.input_norm == "none"
    with torch.no_grad():
        assert torch.equal(loaded.model(x), raw_net(x))
