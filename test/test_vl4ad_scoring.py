"""Pure VL4AD scoring math and fusion on constructed embeddings (no CLIP needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowclas_ros.config_io import ConfigError, from_dict
from flowclas_ros.model.vl4ad.anomaly_map import class_logits, outlier_score, stack_class_embeddings
from flowclas_ros.model.vl4ad.fusion import FusionConfig, calibrate_fusion, fit_norm, fuse
from flowclas_ros.model.vl4ad.prompts import PromptSet, resolve_classes

T = 0.1


def _unit(*values: float) -> torch.Tensor:
    return F.normalize(torch.tensor(values, dtype=torch.float32), dim=0)


def _patches(*vectors: torch.Tensor) -> torch.Tensor:
    """Stacks D-vectors into a (1, D, 1, N) patch-embedding map."""
    return torch.stack(vectors, dim=1)[None, :, None, :]


def _score_for(ps: PromptSet, prompt_vec: dict[str, torch.Tensor], patches: torch.Tensor) -> torch.Tensor:
    """Runs the real merge/OOD resolution and layout with hand-built prompt embeddings."""
    classes = resolve_classes(ps)
    unique = list(dict.fromkeys(p for cls in classes.prompts for p in cls))
    emb = torch.stack([prompt_vec[p] for p in unique])
    index = [[unique.index(p) for p in cls] for cls in classes.prompts]
    logits = class_logits(patches, stack_class_embeddings(emb, index), ps.temperature)
    return outlier_score(logits, classes.num_id)[0, 0]


def test_max_logit_matches_explicit_loop_on_random_embeddings():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(3, 4, 8), dim=-1)
    patches = torch.randn(2, 8, 3, 5)
    got = class_logits(patches, text, temperature=0.07)
    p = F.normalize(patches, dim=1)
    for c in range(3):
        cos = torch.stack([(p * text[c, k].view(1, 8, 1, 1)).sum(1) for k in range(4)])
        torch.testing.assert_close(got[:, c], cos.max(0).values / 0.07, rtol=1e-5, atol=1e-5)


def test_max_logit_picks_the_best_prompt_not_the_mean():
    e = torch.eye(4)
    # Class 0 has prompts e0 and e1, class 1 has e2. The patch is exactly e1.
    text = stack_class_embeddings(torch.stack([e[0], e[1], e[2]]), [[0, 1], [2]])
    logits = class_logits(_patches(e[1] * 3.0), text, temperature=T)[0, :, 0, 0]
    assert logits[0].item() == pytest.approx(1.0 / T)  # max prompt; a mean ensemble would give 0.5 / T
    assert logits[1].item() == pytest.approx(0.0)
    # Padding by repetition: class 1 got K=2 slots, both e2, which cannot change its max.
    assert text.shape == (2, 2, 4)
    torch.testing.assert_close(text[1, 0], text[1, 1])


def test_score_is_low_for_clear_inliers_and_bounded():
    e = torch.eye(4)
    text = stack_class_embeddings(torch.stack([e[0], e[1]]), [[0], [1]])
    score = outlier_score(class_logits(_patches(e[0], e[2]), text, T), num_id=2)[0, 0]
    assert score[0] < 0.01  # matches ID class 0 strongly
    assert score[1] == pytest.approx(0.5, abs=1e-6)  # orthogonal to both: uniform over 2 ID classes
    assert torch.all((score >= 0) & (score < 1))


def test_merging_two_confused_id_classes_lowers_their_score():
    vec = {"rock": _unit(1, 0, 0, 0), "boulder": _unit(0.9, 0.436, 0, 0), "sky": _unit(0, 0, 1, 0)}
    base = dict(
        temperature=T, templates=["{}"], id_classes={"rock": ["rock"], "boulder": ["boulder"], "sky": ["sky"]}
    )
    between = _patches(_unit(0.95, 0.22, 0, 0))  # close to rock and boulder alike
    separate = _score_for(PromptSet(**base), vec, between)
    merged = _score_for(PromptSet(**base, merge=[["rock", "boulder"]]), vec, between)
    assert separate > 0.35  # split between two ID classes
    assert merged < 0.05 and merged < separate
    # A sky patch is scored (almost) the same either way and stays an inlier.
    sky = _patches(vec["sky"])
    assert _score_for(PromptSet(**base, merge=[["rock", "boulder"]]), vec, sky) < 0.01
    assert _score_for(PromptSet(**base), vec, sky) < 0.01


def test_ood_prompts_raise_the_score_of_patches_like_them():
    vec = {"sand": _unit(1, 0, 0, 0), "sky": _unit(0, 1, 0, 0), "cable": _unit(0.3, 0, 1, 0)}
    base = dict(temperature=T, templates=["{}"], id_classes={"sand": ["sand"], "sky": ["sky"]})
    cable_patch = _patches(_unit(0.3, 0, 1, 0))
    without = _score_for(PromptSet(**base), vec, cable_patch)
    with_ood = _score_for(PromptSet(**base, ood={"cable": ["cable"]}), vec, cable_patch)
    assert with_ood > without
    assert with_ood > 0.95
    # An inlier (sand) patch stays an inlier when the OOD class is added.
    sand_patch = _patches(vec["sand"])
    assert _score_for(PromptSet(**base, ood={"cable": ["cable"]}), vec, sand_patch) < 0.1


def test_lower_temperature_sharpens():
    e = torch.eye(3)
    text = stack_class_embeddings(torch.stack([e[0], e[1]]), [[0], [1]])
    patch = _patches(_unit(1, 0.5, 0))
    sharp = outlier_score(class_logits(patch, text, 0.01), 2)
    soft = outlier_score(class_logits(patch, text, 1.0), 2)
    assert sharp.item() < soft.item()


# ------------------------------------------------------------------------------------------------ fusion


def test_fusion_off_returns_exactly_the_flow_score():
    flow = torch.rand(2, 5, 7)
    before = flow.clone()
    cfg = FusionConfig(mode="off", weight=0.9, flow_norm=(0.2, 0.3), text_norm=(5.0, 9.0))
    for text in (torch.rand(2, 5, 7) * 100, torch.full((2, 5, 7), float("nan")), None):
        out = fuse(flow, text, cfg)
        assert out is flow
        assert torch.equal(out, before)


def test_fusion_weighted_and_max_on_known_values():
    flow = torch.tensor([[[0.0, 1.0, 2.0]]])
    text = torch.tensor([[[10.0, 30.0, 10.0]]])
    weighted = FusionConfig(mode="weighted", weight=0.25, flow_norm=(0.0, 2.0), text_norm=(10.0, 30.0))
    # flow_n = [0, .5, 1], text_n = [0, 1, 0]
    torch.testing.assert_close(fuse(flow, text, weighted), torch.tensor([[[0.0, 0.625, 0.75]]]))
    biggest = FusionConfig(mode="max", flow_norm=(0.0, 2.0), text_norm=(10.0, 30.0))
    torch.testing.assert_close(fuse(flow, text, biggest), torch.tensor([[[0.0, 1.0, 1.0]]]))
    z = FusionConfig(mode="max", norm="zscore", flow_norm=(1.0, 0.5), text_norm=(10.0, 10.0))
    torch.testing.assert_close(fuse(flow, text, z), torch.tensor([[[0.0, 2.0, 2.0]]]))
    only_flow = FusionConfig(mode="weighted", weight=0.0, flow_norm=(0.0, 2.0))
    torch.testing.assert_close(fuse(flow, text, only_flow), flow / 2)


def test_fusion_errors():
    flow = torch.rand(1, 4, 4)
    with pytest.raises(ValueError, match="needs a text score"):
        fuse(flow, None, FusionConfig(mode="max"))
    with pytest.raises(ValueError, match="vs text score"):
        fuse(flow, torch.rand(1, 4, 5), FusionConfig(mode="weighted"))
    with pytest.raises(ConfigError, match=r"fusion.weight must be in \[0, 1\]"):
        from_dict(FusionConfig, {"mode": "weighted", "weight": 1.5})
    with pytest.raises(ConfigError, match="text_norm: minmax needs lo < hi"):
        from_dict(FusionConfig, {"mode": "max", "text_norm": [1.0, 1.0]})
    with pytest.raises(ConfigError, match="'sum' is not one of"):
        from_dict(FusionConfig, {"mode": "sum"})


def test_fit_norm_and_calibrate():
    values = np.arange(10001, dtype=np.float32)  # 0..10000
    lo, hi = fit_norm(values, "minmax")
    assert lo == pytest.approx(100.0) and hi == pytest.approx(9900.0)
    mean, std = fit_norm([torch.tensor([1.0, 3.0]), torch.tensor([float("nan"), 1.0, 3.0])], "zscore")
    assert mean == pytest.approx(2.0) and std == pytest.approx(np.std([1, 3, 1, 3], ddof=1))
    with pytest.raises(ValueError, match="constant"):
        fit_norm(np.ones(100), "minmax")
    cfg = calibrate_fusion(FusionConfig(mode="weighted"), values, values * 2)
    assert cfg.flow_norm == pytest.approx((100.0, 9900.0)) and cfg.text_norm == pytest.approx(
        (200.0, 19800.0)
    )
    subsampled = fit_norm(np.random.default_rng(0).random(50_000), "minmax", max_samples=5_000)
    assert subsampled[0] == pytest.approx(0.01, abs=0.01) and subsampled[1] == pytest.approx(0.99, abs=0.01)
