"""Pieces of the official recipes: OneCycle, Lovasz, balanced contrast, Cityscapes ids, COCO paste, crops."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from recipe_support import CONFIGS, make_allo, make_cityscapes, make_coco, onecycle_expected
from train_support import tiny_train_dict

from flowclas_ros.config_io import ConfigError, apply_overrides, from_dict, load, read_mapping, to_dict
from flowclas_ros.data.images.folder import DatasetError, FolderDataset
from flowclas_ros.data.outliers.coco import CocoNativeSource
from flowclas_ros.data.outliers.dataset import OETrainDataset
from flowclas_ros.data.outliers.exposure import OEConfig
from flowclas_ros.data.readers.cityscapes import CityscapesDataset, label_ids_to_train_ids
from flowclas_ros.model.config import PreprocessConfig
from flowclas_ros.model.flow import DiagonalGaussian
from flowclas_ros.model.flowclas.loss import lovasz_softmax_loss, nll_from_log_prob, nll_loss, supcon_loss
from flowclas_ros.model.flowclas.objective import FlowCLASObjective, balanced_count
from flowclas_ros.model.flowclas.torch_model import FlowCLAS
from flowclas_ros.training.checkpointing import load_training_state, save_training_state
from flowclas_ros.training.cli import main
from flowclas_ros.training.config import OptimConfig, TrainConfig
from flowclas_ros.training.optim import build_optimizer, build_scheduler, decays


@pytest.mark.parametrize("anneal", ["linear", "cos"])
def test_onecycle_lr_and_beta1_follow_the_formula(anneal):
    total, lr = 100, 1e-5
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=lr)
    cfg = OptimConfig(lr=lr, schedule="onecycle", warmup_anneal=anneal)
    scheduler = build_scheduler(optimizer, cfg, total)
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    seen = {}
    for step in range(total):
        seen[step] = (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        scheduler.step()
    for step in (0, 10, 28, 29, 30, 50, 75, 99):
        want_lr, want_beta = onecycle_expected(step, total, lr, anneal == "linear")
        assert seen[step][0] == pytest.approx(want_lr, rel=1e-9, abs=1e-18), step
        assert seen[step][1] == pytest.approx(want_beta, rel=1e-9), step
    assert seen[0][0] == pytest.approx(lr / 25) and seen[99][0] == pytest.approx(lr / 2.5e5)
    if anneal == "linear":  # mid-warm-up: linear, not the cosine of plain OneCycleLR
        assert seen[14][0] == pytest.approx(lr / 25 + (lr - lr / 25) * 14 / 29)


def _jaccard_loss(errors_set: np.ndarray, fg: np.ndarray) -> float:
    """Delta_J(M) = |M| / |fg U M| for the set M of mispredicted pixels (Berman et al.)."""
    union = np.logical_or(fg, errors_set).sum()
    return float(errors_set.sum() / union) if union else 0.0


def _lovasz_brute(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Lovasz extension as the integral of Delta_J over the level sets {m >= t}, from its definition."""
    total = 0.0
    for c in np.unique(labels):
        fg = labels == c
        m = np.abs(fg.astype(float) - probs[:, c])
        levels = np.concatenate([[0.0], np.sort(np.unique(m))])
        # f(m) = sum over consecutive levels of (t_k - t_{k-1}) * Delta_J({m >= t_k})
        total += sum((hi - lo) * _jaccard_loss(m >= hi, fg) for lo, hi in itertools.pairwise(levels))
    return total / num_classes


def test_lovasz_matches_brute_force_definition():
    rng = np.random.default_rng(0)
    for trial in range(20):
        num_classes = int(rng.integers(2, 5))
        logits = torch.tensor(rng.normal(size=(2, num_classes, 2, 3)), dtype=torch.float64)
        target = torch.tensor(rng.integers(0, num_classes, (2, 2, 3)))
        if trial % 3 == 0:
            target[0, 0] = 255  # ignored pixels
        probs = torch.softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, num_classes).numpy()
        flat = target.reshape(-1).numpy()
        keep = flat != 255
        want = _lovasz_brute(probs[keep], flat[keep], num_classes)
        assert float(lovasz_softmax_loss(logits, target)) == pytest.approx(want, abs=1e-6)  # float32


def test_lovasz_at_a_hard_prediction_is_the_jaccard_loss_and_has_gradients():
    # A confident prediction: errors ~ 0 or 1, so the loss is ~ mean over classes of 1 - IoU.
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.tensor([[[[50.0, 50.0, 50.0, -50.0]], [[-50.0, -50.0, -50.0, 50.0]]]], requires_grad=True)
    loss = lovasz_softmax_loss(logits, target)
    iou0, iou1 = 2 / 3, 1 / 2  # class 0: pred {0,1,2} vs gt {0,1}; class 1: pred {3} vs gt {2,3}
    assert float(loss.detach()) == pytest.approx(((1 - iou0) + (1 - iou1)) / 2, abs=1e-6)
    lovasz_softmax_loss(logits * 0.01, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_balanced_count_is_the_official_minimum():
    mixed = torch.tensor([1] * 7 + [0] * 30 + [255] * 5)
    outlier = torch.tensor([1] * 12 + [0] * 4 + [255] * 9)
    assert balanced_count(mixed, outlier, 512) == 4
    assert balanced_count(mixed, outlier, 3) == 3
    no_background = torch.tensor([1] * 12 + [255] * 9)  # ALLO: COCO background ignored -> term left out
    assert balanced_count(mixed, no_background, 512) == 7


def test_official_weight_decay_rule():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    assert decays("proj_head.weight", param, "official") and decays("base.mean", param, "official")
    assert decays("seg_head.1.weight", param, "official")  # BatchNorm weight: decayed by the name rule
    assert not decays("proj_head.bias", param, "official") and not decays(
        "flow.module_list.0.x", param, "official"
    )
    assert not decays("norm.weight", param, "official")


def test_cityscapes_ids_and_missing_gtfine(tmp_path):
    ids = np.array([[0, 7, 8, 11, 33], [1, 6, 34, 255, 26]], np.uint8)
    assert label_ids_to_train_ids(ids).tolist() == [[255, 0, 1, 2, 18], [255, 255, 255, 255, 13]]
    root = make_cityscapes(tmp_path / "city", [(20, 30)])
    data = CityscapesDataset(root)
    sem = data.load_semantic(0)
    assert set(np.unique(sem)) == {0, 10, 13, 255}
    assert ((data.load_mask(0) == 255) == (sem == 255)).all()
    for sub in (root / "gtFine" / "train" / "aachen").iterdir():
        sub.unlink()
    (root / "gtFine" / "train" / "aachen").rmdir()
    (root / "gtFine" / "train").rmdir()
    with pytest.raises(DatasetError, match=r"gtFine/train.*not found") as info:
        CityscapesDataset(root)
    assert len(str(info.value).splitlines()) == 1


def test_coco_native_paste_scale_gray_background_and_missing_masks(tmp_path):
    root = make_coco(tmp_path / "coco", [(40, 60)], meta_ood=True)
    src = CocoNativeSource(root, [0.5], gray_p=1.0, ignore_background=True)
    obj = src.draw(np.zeros((56, 112, 3), np.uint8), np.random.default_rng(0))
    image, mask = obj.standalone
    assert image.shape == (56, 112, 3) and mask.shape == (56, 112)
    assert set(np.unique(mask)) == {1, 255}  # background ignored, padding 255
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()  # ToGray
    assert (mask[:8] == 255).all()  # 40 rows centred in 56: 8 rows of padding on top
    assert obj.mask.shape[0] <= 20 and obj.mask.shape[1] <= 30  # half the native 40x60 image
    plain = CocoNativeSource(root, [0.5], gray_p=0.0).draw(
        np.zeros((56, 112, 3), np.uint8), np.random.default_rng(0)
    )
    assert set(np.unique(plain.standalone[1])) == {0, 1, 255}
    assert not (plain.standalone[0][..., 0] == plain.standalone[0][..., 1]).all()
    bare = tmp_path / "bare"
    (bare / "images").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"oe\.folder: .*no masks/"):
        CocoNativeSource(bare, [0.5])


def _vertical_orders(ds: OETrainDataset) -> set[bool]:
    """Whether the top half is brighter than the bottom one, over samples and epochs."""
    orders = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in (0, 1, 3):
            mixed = ds[i]["mixed"]
            orders.add(bool(mixed[:, :20].mean() > mixed[:, -20:].mean()))
    return orders


def test_native_crops_vflip_and_padding_of_small_images(tmp_path):
    make_allo(tmp_path / "allo")
    coco = make_coco(tmp_path / "coco", [(30, 40)], meta_ood=False)
    oe = OEConfig(kind="coco", coco_scale="native", folder=str(coco), scales=[1.0], ignore_background=True)
    data = FolderDataset(tmp_path / "allo" / "train", label_map={"8": 1, "255": 255}, default_label=0)
    pre = PreprocessConfig(input_size=(14, 14))
    ds = OETrainDataset(data, oe, pre, seed=0, vflip=True, crop=(56, 112))
    for i in range(len(ds)):
        item = ds[i]
        assert item["mixed"].shape == (3, 56, 112) and item["mask"].shape == (56, 112)
        assert (item["mask"] == 1).any()  # the whole 30x40 object fits the crop
    small = ds[2]  # 50x100 image: padded to 56x112 with ignored pixels
    assert (small["mask"] == 255).sum() >= 6 * 100
    assert _vertical_orders(ds) == {True, False}  # vflip: bright ground on top in some samples
    assert _vertical_orders(OETrainDataset(data, oe, pre, seed=0, crop=(56, 112))) == {False}


def test_yaml11_words_keep_enum_keys(tmp_path):
    cfg_path = tmp_path / "t.yaml"
    cfg_path.write_text("amp: off\ndata:\n  hflip: no\n")
    cfg = load(TrainConfig, cfg_path)
    assert cfg.amp == "off" and cfg.data.hflip is False
    cfg = load(TrainConfig, cfg_path, ["amp=off", "data.val=", "data.vflip=yes"])
    assert cfg.amp == "off" and cfg.data.val is None and cfg.data.vflip is True
    data = apply_overrides({}, ["model.fusion.mode=off"])
    assert data["model"]["fusion"]["mode"] == "off"


@pytest.mark.parametrize("name", ["demo", "mvtec_clflow"])
def test_print_config_is_complete_and_round_trips(name, capsys):
    assert main(["--config", str(CONFIGS / f"{name}.yaml"), "--print-config", "--set", "amp=off"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == to_dict(load(TrainConfig, CONFIGS / f"{name}.yaml", ["amp=off"]))
    assert from_dict(TrainConfig, printed) == load(TrainConfig, CONFIGS / f"{name}.yaml", ["amp=off"])
    assert set(printed) == {f.name for f in TrainConfig.__dataclass_fields__.values()}
    assert read_mapping(CONFIGS / f"{name}.yaml")  # the file itself is unchanged input


def test_nll_from_log_prob_equals_nll_loss():
    gen = torch.Generator().manual_seed(0)
    base = DiagonalGaussian(5)
    with torch.no_grad():
        base.mean.normal_(generator=gen)
        base.log_sigma.normal_(generator=gen)
    z, ldj = torch.randn(2, 5, 3, 4, generator=gen), torch.randn(2, generator=gen)
    mask = torch.rand(2, 3, 4, generator=gen) > 0.3
    for reduction in ("sum", "mean"):
        want = nll_loss(z, ldj, mask, base.mean, base.log_sigma, reduction)
        got = nll_from_log_prob(base.log_prob(z), ldj, mask, reduction)
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)


def test_onecycle_state_resumes_through_weights_only_load(tmp_path):
    def build():
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([param], lr=1e-5)
        return optimizer, build_scheduler(optimizer, OptimConfig(lr=1e-5, schedule="onecycle"), 10)

    optimizer, scheduler = build()
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    torch.save({"o": optimizer.state_dict(), "s": scheduler.state_dict()}, tmp_path / "optim.pt")
    saved = torch.load(tmp_path / "optim.pt", weights_only=True)  # what load_training_state does
    again_opt, again = build()
    again_opt.load_state_dict(saved["o"])
    again.load_state_dict(saved["s"])
    for opt, sched in ((optimizer, scheduler), (again_opt, again)):
        opt.step()
        sched.step()
    assert again.get_last_lr() == scheduler.get_last_lr()
    assert again_opt.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]


def test_seg_head_state_saved_and_restored_with_the_training_state(tmp_path):
    cfg = from_dict(TrainConfig, tiny_train_dict(tmp_path))
    cfg.seg.enabled = True
    model = FlowCLAS(cfg.model)
    objective = FlowCLASObjective(model, cfg.loss, None, cfg.seg)
    extra = objective.extra_modules()
    optimizer = build_optimizer(model, cfg.optim, extra)
    scheduler = build_scheduler(optimizer, cfg.optim, 10)
    assert any(p is extra["seg_head"][0].weight for g in optimizer.param_groups for p in g["params"])
    with torch.no_grad():
        extra["seg_head"][0].weight.add_(1.0)
    path = save_training_state(tmp_path / "run", 3, model, optimizer, scheduler, None, {}, extra)
    other = FlowCLASObjective(FlowCLAS(cfg.model), cfg.loss, None, cfg.seg)
    other_extra = other.extra_modules()
    other_opt = build_optimizer(other.model, cfg.optim, other_extra)
    other_sched = build_scheduler(other_opt, cfg.optim, 10)
    load_training_state(path, other.model, other_opt, other_sched, None, extra_modules=other_extra)
    for key, value in extra["seg_head"].state_dict().items():
        torch.testing.assert_close(other_extra["seg_head"].state_dict()[key], value)


def test_official_variant_projection_head_has_the_authors_kaiming_init():
    cfg = from_dict(TrainConfig, tiny_train_dict(Path("unused"))).model
    cfg.flow.variant, cfg.flow.proj_dim = "official", 64
    head = FlowCLAS(cfg).proj_head
    weight, bias = head.weight.detach(), head.bias.detach()
    fan_out = weight.shape[0]  # 1x1 kernel
    assert float(weight.std()) == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1)
    assert float(bias.abs().max()) == 0.0


def test_supcon_all_anchors_is_the_official_mean():
    """The official InfoNCE: mean over every anchor of mean_{p} log(e^l_p / (e^l_p + sum_n e^l_n))."""
    gen = torch.Generator().manual_seed(0)
    anchors = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=1)
    labels = torch.tensor([1, 0, 1])  # anchor 1 (inlier) has no positive: no other inlier anywhere
    extra = torch.nn.functional.normalize(torch.randn(2, 4, generator=gen), dim=1)
    contrast, contrast_labels = torch.cat([anchors, extra]), torch.tensor([1, 0, 1, 1, 1])
    logits = anchors @ contrast.T / 0.1
    same = labels.view(-1, 1) == contrast_labels.view(1, -1)
    positive = same.clone()
    positive[torch.arange(3), torch.arange(3)] = False
    neg = (torch.exp(logits) * ~same).sum(1, keepdim=True)
    log_prob = logits - torch.log(torch.exp(logits) + neg)
    want = -((log_prob * positive).sum(1) / positive.sum(1).clamp(min=1e-8)).mean()
    args = (anchors, labels, contrast, contrast_labels, 0.1)
    got = supcon_loss(*args, anchors_lead_contrast=True, all_anchors=True)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    only_valid = supcon_loss(*args, anchors_lead_contrast=True)
    assert float(only_valid) == pytest.approx(float(want) * 3 / 2, rel=1e-5)
