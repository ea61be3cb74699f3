"""The authors' model parts against direct implementations of their formulas (no ViT-B, tiny tensors).

Rein adapter, dinov2 position-embedding interpolation, the official flow's
steps, symmetric padding, and the safe loader refusing a malicious pickle.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from official_formats import official_native_checkpoint

from flowclas_ros.model.backbones.rein_dinov2 import LoRAReins, dinov2_pos_embed
from flowclas_ros.model.config import FlowConfig, ModelConfig, PreprocessConfig
from flowclas_ros.model.flow_official import OfficialFlow, OfficialGaussian
from flowclas_ros.model.safe_load import Opaque, UnsafeFileError, safe_torch_load

SIZES = [(224, 224), (280, 518), (250, 330)]
"""Input sizes; grids after padding to multiples of 14: 16x16, 20x37, 18x24."""


def _grid(size: tuple[int, int]) -> tuple[int, int]:
    return (-(-size[0] // 14), -(-size[1] // 14))


@pytest.mark.parametrize("size", SIZES)
def test_rein_adapter_matches_formula(size):
    torch.manual_seed(0)
    depth, dim, rank = 3, 32, 4
    reins = LoRAReins(depth, dim, rank)
    with torch.no_grad():
        reins.scale.fill_(0.7)
    tokens_n = _grid(size)[0] * _grid(size)[1]
    x = torch.randn(2, 1 + tokens_n, dim)
    for layer in range(depth):
        out = reins(x, layer)
        # the formula, written out token by token in the authors' (N, B, C) layout
        feats = x[:, 1:].permute(1, 0, 2)
        t = reins.learnable_tokens_a[layer] @ reins.learnable_tokens_b[layer]
        logits = torch.einsum("nbc,mc->nbm", feats, t) / math.sqrt(dim)
        attn = torch.exp(logits - logits.amax(-1, keepdim=True))
        attn = attn / attn.sum(-1, keepdim=True)
        proj = t[1:] @ reins.mlp_token2feat.weight.t() + reins.mlp_token2feat.bias
        delta = torch.einsum("nbm,mc->nbc", attn[:, :, 1:], proj) + feats
        delta = delta @ reins.mlp_delta_f.weight.t() + reins.mlp_delta_f.bias
        expected = (feats + 0.7 * delta).permute(1, 0, 2)
        assert torch.equal(out[:, :1], x[:, :1])  # class token kept
        assert torch.allclose(out[:, 1:], expected, atol=1e-5, rtol=1e-5)


def _cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _resample_axis(grid: np.ndarray, out: int, scale: float) -> np.ndarray:
    """Bicubic along axis 0 with torch's scale-factor coordinate map src = (dst + .5) / scale - .5."""
    size = grid.shape[0]
    result = np.zeros((out, *grid.shape[1:]))
    for dst in range(out):
        src = (dst + 0.5) / scale - 0.5
        base = math.floor(src)
        for k in range(-1, 3):
            result[dst] += _cubic(src - (base + k)) * grid[min(max(base + k, 0), size - 1)]
    return result


@pytest.mark.parametrize("size", SIZES + [(518, 518)])
def test_dinov2_pos_embed_matches_formula(size):
    torch.manual_seed(1)
    side, channels = 37, 3
    table = torch.randn(1, 1 + side * side, channels)
    grid = _grid(size)
    out = dinov2_pos_embed(table, grid)
    if grid == (side, side):  # dinov2 returns its table untouched for the native grid
        assert out is table
        return
    patch = table[0, 1:].double().numpy().reshape(side, side, channels)
    rows = _resample_axis(patch, grid[0], (grid[0] + 0.1) / side)
    both = _resample_axis(rows.transpose(1, 0, 2), grid[1], (grid[1] + 0.1) / side).transpose(1, 0, 2)
    assert out.shape == (1, 1 + grid[0] * grid[1], channels)
    assert torch.equal(out[0, 0], table[0, 0])
    np.testing.assert_allclose(out[0, 1:].numpy(), both.reshape(-1, channels), atol=2e-5)
    # not what a size-based resize (timm's default) gives
    sized = torch.nn.functional.interpolate(
        table[:, 1:].reshape(1, side, side, channels).permute(0, 3, 1, 2), size=grid, mode="bicubic"
    )
    assert not torch.allclose(sized.permute(0, 2, 3, 1).reshape(1, -1, channels), out[:, 1:], atol=1e-4)


def test_official_flow_matches_formulas():
    torch.manual_seed(2)
    channels = 8
    flow = OfficialFlow(channels, FlowConfig(variant="official", steps=2), seed=0).eval()
    with torch.no_grad():
        for p in flow.parameters():
            if p.dtype.is_floating_point:
                p.normal_(0, 0.3)
    x = torch.randn(2, channels, 3, 5)
    z, log_det = flow(x)
    h, expected_det = x, torch.zeros(2)
    for step in range(2):
        act, perm, coup = flow.module_list[3 * step : 3 * step + 3]
        h = (h - act.loc) / torch.exp(act.log_scale)
        expected_det = expected_det - act.log_scale.sum() * 15
        h = h[:, perm.perm]
        a = coup.subnet(h[:, :4])
        s = 2.0 * torch.tanh(a[:, :4])
        h = torch.cat((h[:, :4], h[:, 4:] * torch.exp(s) + a[:, 4:]), dim=1)
        expected_det = expected_det + s.sum(dim=(1, 2, 3))
    assert torch.allclose(z, h, atol=1e-6) and torch.allclose(log_det, expected_det, atol=1e-4)
    assert torch.equal(perm.perm[perm.perm_inv], torch.arange(channels))
    base = OfficialGaussian(channels)
    with torch.no_grad():
        base.mu.normal_()
        base.log_scale.normal_(0, 0.2)
    mu, log_scale = base.mu.view(1, -1, 1, 1), base.log_scale.view(1, -1, 1, 1)
    their_eval_logp = (-0.5 * ((z - mu) * torch.exp(-log_scale)) ** 2 - log_scale).mean(1)
    assert torch.allclose(base.log_prob(z).mean(1) + 0.5 * math.log(2 * math.pi), their_eval_logp, atol=1e-5)


def test_symmetric_padding_is_zero_before_normalisation():
    from flowclas_ros.model.config import BackboneConfig
    from flowclas_ros.model.flowclas.torch_model import FlowCLAS

    cfg = ModelConfig(
        backbone=BackboneConfig(name="vit_small_patch14_dinov2", weights="none", norm=False),
        preprocess=PreprocessConfig(mean=(0.2, 0.3, 0.4), std=(0.5, 0.25, 0.125), padding="symmetric"),
    )
    model = FlowCLAS(cfg)
    x = torch.randn(1, 3, 17, 30)  # pads 11 rows (5 top, 6 bottom) and 12 columns (6 / 6)
    padded, hw = model.pad_input(x)
    assert padded.shape[-2:] == (28, 42) and hw == (17, 30)
    assert torch.equal(padded[:, :, 5:22, 6:36], x)
    pixel_zero = (-torch.tensor(cfg.preprocess.mean) / torch.tensor(cfg.preprocess.std)).view(1, 3, 1)
    assert torch.allclose(padded[:, :, :5].flatten(2), pixel_zero.expand(1, 3, 5 * 42))
    assert torch.allclose(padded[:, :, 22:].flatten(2), pixel_zero.expand(1, 3, 6 * 42))
    assert model.pad_offset((28, 42), (17, 30)) == (5, 6)
    with torch.no_grad():
        assert model(x).shape == (1, 17, 30)


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_zip(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    boom = _Boom()
    boom.marker = marker
    for name, content in (
        ("nested.pth", {"state_dict": {"w": 1}, "transform": boom}),
        ("top.pth", boom),
    ):
        path = tmp_path / name
        path.write_bytes(_torch_zip(pickle.dumps(content, protocol=2)))
        with pytest.raises(UnsafeFileError, match="refusing global (posix|os).system"):
            safe_torch_load(path)
    eval_pickle = pickle.dumps(type("E", (), {"__reduce__": lambda s: (eval, ("1+1",))})(), protocol=2)
    (tmp_path / "eval.pth").write_bytes(_torch_zip(eval_pickle))
    with pytest.raises(UnsafeFileError, match="builtin.*eval"):
        safe_torch_load(tmp_path / "eval.pth")
    assert not marker.exists()


def test_safe_load_reads_tensors_and_keeps_foreign_objects_inert(tmp_path):
    import sys
    import types

    module = types.ModuleType("not_installed_here")

    class Transform:
        def __init__(self):
            self.size = (14, 14)

    Transform.__module__, Transform.__qualname__ = module.__name__, "Transform"
    module.Transform = Transform
    sys.modules[module.__name__] = module
    base = torch.arange(12.0).reshape(3, 4)
    tagged = torch.ones(2)
    tagged.note = "python state"  # pickled through torch._tensor._rebuild_from_type_v2
    try:
        torch.save(
            {
                "a": base[:, 1:],
                "b": torch.tensor(True),
                "h": torch.ones(2, dtype=torch.bfloat16),
                "t": Transform(),
                "tagged": tagged,
                "path": Path("/data/x"),
            },
            tmp_path / "x.pth",
        )
    finally:
        del sys.modules[module.__name__]
    data = safe_torch_load(tmp_path / "x.pth")
    assert (
        torch.equal(data["a"], base[:, 1:]) and data["b"].item() is True and data["h"].dtype == torch.bfloat16
    )
    assert isinstance(data["t"], Opaque) and data["t"].qualname == "not_installed_here.Transform"
    assert data["t"].state == {"size": (14, 14)}
    assert torch.equal(data["tagged"], torch.ones(2)) and isinstance(data["path"], Opaque)
    (tmp_path / "legacy.pth").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UnsafeFileError, match="not a torch zip"):
        safe_torch_load(tmp_path / "legacy.pth")
    assert not Path(tmp_path / "pwned").exists()


def test_official_variant_native_resolution_exports_at_a_fixed_size(tmp_path):
    from flowclas_ros.export import main as export_main
    from flowclas_ros.runtime.base import create_backend

    ckpt = official_native_checkpoint(tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    small, large = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((31, 45), (40, 29)))
    native = create_backend("torch", ckpt)
    assert [p.score_map.shape for p in native.predict([small, large])] == [(31, 45), (40, 29)]
    onnx_path = tmp_path / "m.onnx"
    assert (
        export_main(
            [
                "--checkpoint",
                str(ckpt),
                "--format",
                "onnx",
                "--out",
                str(onnx_path),
                "--input-size",
                "31",
                "45",
            ]
        )
        == 0
    )
    fixed = create_backend("onnxruntime", onnx_path)
    ours, theirs = fixed.predict([small])[0].score_map, native.predict([small])[0].score_map
    assert np.ptp(theirs) > 1e-3 and np.abs(ours - theirs).max() <= 1e-3 * float(np.ptp(theirs))
    assert fixed.predict([large])[0].score_map.shape == (40, 29)  # resized to the export size and back
