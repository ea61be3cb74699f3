from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from flowclas_ros.config_io import ConfigError, from_dict
from flowclas_ros.data.outliers.dataset import OETrainDataset
from flowclas_ros.data.outliers.exposure import OEConfig, OutlierExposure, SyntheticOEConfig, paste_object
from flowclas_ros.model.config import PreprocessConfig

H, W = 64, 72


def _inlier(seed=0):
    # Smooth dark-green inlier: no pasted pixel can coincide with it by chance.
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 1] = 60 + rng.integers(0, 3, (H, W))
    return img


def _bbox(mask):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def _check_sample(sample, inlier):
    assert sample.mixed.shape == inlier.shape and sample.mixed.dtype == np.uint8
    assert sample.outlier_image.shape == inlier.shape and sample.outlier_image.dtype == np.uint8
    assert sample.paste_mask.shape == (H, W) and sample.paste_mask.dtype == np.uint8
    assert set(np.unique(sample.paste_mask)) == {0, 1}
    changed = (sample.mixed != inlier).any(axis=2)
    inside = sample.paste_mask == 1
    assert not changed[~inside].any(), "pixels changed outside the paste mask"
    assert changed[inside].mean() > 0.5, "paste mask marks pixels that were not replaced"
    assert set(np.unique(sample.outlier_mask)) <= {0, 1, 255} and (sample.outlier_mask == 1).any()


@pytest.mark.parametrize("kind", ["perlin", "cutpaste", "shapes"])
def test_synthetic_kinds_mark_exactly_the_changed_pixels(kind):
    cfg = OEConfig(area_range=(0.02, 0.1), synthetic=SyntheticOEConfig(weights={kind: 1.0}))
    pool_img = np.full((H, W, 3), (250, 30, 200), np.uint8)  # cut-paste source far from the inlier
    oe = OutlierExposure(cfg, inlier_pool=lambda rng: pool_img)
    inlier = _inlier()
    for seed in range(5):
        sample = oe(inlier, np.random.default_rng(seed))
        assert sample.source == kind and sample.applied
        _check_sample(sample, inlier)
        assert 0.02 * H * W * 0.85 <= sample.paste_mask.sum() <= 0.1 * H * W * 1.15
        # Standalone image: the same object elsewhere on the inlier; background labelled 0 (true inlier).
        other = (sample.outlier_image != inlier).any(axis=2)
        assert not other[sample.outlier_mask == 0].any()
        assert (sample.outlier_mask == 1).sum() == sample.paste_mask.sum()


def test_deterministic_given_generator():
    oe = OutlierExposure(OEConfig())
    inlier = _inlier()
    a, b = oe(inlier, np.random.default_rng(7)), oe(inlier, np.random.default_rng(7))
    for name in ("mixed", "paste_mask", "outlier_image", "outlier_mask"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    c = oe(inlier, np.random.default_rng(8))
    assert not np.array_equal(a.paste_mask, c.paste_mask)


def _coco_folder(root, n=2, size=(60, 80), box=(10, 30, 20, 60), color=(250, 10, 10)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = np.full((*size, 3), 128, np.uint8)
        y0, y1, x0, x1 = box
        img[y0:y1, x0:x1] = color
        cv2.imwrite(
            str(root / "images" / f"im{i}.jpg" if i else root / "images" / f"im{i}.png"),
            cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
        )
        mask = np.zeros(size, np.uint8)
        mask[y0:y1, x0:x1] = 254  # Meta-OoD style id: anything > 0 is the object
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), mask)
    return root


@pytest.mark.parametrize("scale", [0.5, 0.75])
def test_coco_folder_scale_and_standalone(tmp_path, scale):
    cfg = OEConfig(kind="coco", folder=str(_coco_folder(tmp_path / "coco")), scales=[scale])
    oe = OutlierExposure(cfg)
    inlier = _inlier()
    fit = np.sqrt(H * W / (60 * 80))  # outlier image area-matched to the inlier first
    for seed in range(4):
        sample = oe(inlier, np.random.default_rng(seed))
        _check_sample(sample, inlier)
        assert sample.source == "coco"
        bh, bw = _bbox(sample.paste_mask)
        assert abs(bh - 20 * fit * scale) <= 1 and abs(bw - 40 * fit * scale) <= 1
        pasted = sample.mixed[sample.paste_mask == 1].astype(int)
        assert (pasted[:, 0] - pasted[:, 1] > 100).all()  # object (red) pixels only, no grey background
        # Standalone: area-matched outlier image, centred; its object keeps the area-matched size.
        assert (sample.outlier_mask == 1).sum() == pytest.approx(20 * 40 * fit * fit, rel=0.1)
        assert (sample.outlier_mask == 255).any()  # padding: the 4:3 image does not fill 64x72
        assert (sample.outlier_mask == 0).any()


def test_coco_errors_name_key_and_layout(tmp_path):
    with pytest.raises(ConfigError, match=r"oe\.folder: required for kind 'coco'"):
        OutlierExposure(OEConfig(kind="coco"))
    (tmp_path / "only_images" / "images").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"oe\.folder: .*lacks images/ or masks/; expected ROOT/images"):
        OutlierExposure(OEConfig(kind="coco", folder=str(tmp_path / "only_images")))
    root = _coco_folder(tmp_path / "coco")
    (root / "masks" / "im1.png").unlink()
    with pytest.raises(ConfigError, match=r"1 images have no mask, e\.g\. .*im1\.png"):
        OutlierExposure(OEConfig(kind="coco", folder=str(root)), key="train.oe")
    with pytest.raises(ConfigError, match=r"train\.oe\.folder"):
        OutlierExposure(OEConfig(kind="coco", folder=str(tmp_path / "missing")), key="train.oe")


def test_image_folder_without_masks(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = rng.integers(150, 256, (50, 90, 3)).astype(np.uint8)
        cv2.imwrite(str(folder / f"p{i}.png"), img)
    oe = OutlierExposure(OEConfig(kind="folder", folder=str(folder), area_range=(0.02, 0.06)))
    inlier = _inlier()
    for seed in range(4):
        sample = oe(inlier, np.random.default_rng(seed))
        _check_sample(sample, inlier)
        assert sample.source == "folder"
        assert 0.02 * 0.85 <= sample.paste_mask.mean() <= 0.06 * 1.15
    with pytest.raises(ConfigError, match=r"oe\.folder: folder '.*nothing' not found; expected ROOT/images"):
        OutlierExposure(OEConfig(kind="folder", folder=str(tmp_path / "nothing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .png/.jpg images"):
        OutlierExposure(OEConfig(kind="folder", folder=str(tmp_path / "empty")))


def test_probability_zero_leaves_inlier():
    sample = OutlierExposure(OEConfig(probability=0.0))(_inlier(), np.random.default_rng(0))
    assert not sample.applied and sample.source == "none"
    assert (
        np.array_equal(sample.mixed, _inlier())
        and not sample.paste_mask.any()
        and not sample.outlier_mask.any()
    )


def test_config_strict_loading():
    cfg = from_dict(
        OEConfig, {"kind": "coco", "folder": "x", "scales": [0.5], "synthetic": {"weights": {"perlin": 2}}}
    )
    assert cfg.scales == [0.5] and cfg.synthetic.weights == {"perlin": 2.0}
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(OEConfig, {"kynd": "coco"})
    with pytest.raises(ConfigError, match="probability"):
        from_dict(OEConfig, {"probability": 1.5})
    with pytest.raises(ConfigError, match=r"is not one of"):
        from_dict(OEConfig, {"kind": "imagenet"})
    with pytest.raises(ConfigError, match=r"oe\.synthetic\.weights: unknown kind"):
        OutlierExposure(OEConfig(synthetic=SyntheticOEConfig(weights={"perlin": 1, "sparkles": 1})))


def test_paste_object_crops_oversized_object():
    inlier = _inlier()
    obj = np.full((H + 10, W + 20, 3), 255, np.uint8)
    mask = np.ones((H + 10, W + 20), bool)
    mixed, paste = paste_object(inlier, obj, mask, np.random.default_rng(0))
    assert paste.all() and (mixed == 255).all()


def _folder_dataset(root, n=4, size=(40, 50)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"f{i}.png"), rng.integers(0, 256, (*size, 3)).astype(np.uint8))
    mask = np.zeros(size, np.uint8)
    mask[:, :5] = 255  # inlier's own ignore region
    cv2.imwrite(str(root / "masks" / "f0.png"), mask)
    return root


def test_train_dataset_items_determinism_and_workers(tmp_path):
    pre = PreprocessConfig(input_size=(28, 42))
    ds = OETrainDataset(_folder_dataset(tmp_path / "d"), OEConfig(area_range=(0.05, 0.1)), pre, seed=1)
    item = ds[0]
    assert item["mixed"].shape == (3, 28, 42) and item["mixed"].dtype == torch.float32
    assert item["outlier"].shape == (3, 28, 42)
    assert item["mask"].shape == (28, 42) and item["mask"].dtype == torch.uint8
    assert set(item["mask"].unique().tolist()) <= {0, 1, 255}
    assert (item["mask"] == 1).any() and (item["mask"] == 255).any()  # pasted + inlier ignore kept
    assert bool(item["applied"]) and int(item["index"]) == 0
    assert torch.equal(ds[2]["mixed"], ds[2]["mixed"])
    before = ds[2]["mask"].clone()
    ds.set_epoch(1)
    assert not torch.equal(before, ds[2]["mask"])
    ds.set_epoch(0)
    serial = [b["mixed"] for b in torch.utils.data.DataLoader(ds, batch_size=2)]
    parallel = [b["mixed"] for b in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))  # per-sample seeding, not per-worker
