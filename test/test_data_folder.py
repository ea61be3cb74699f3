from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from flowclas_ros.data.images.folder import DatasetError, FolderDataset


def _write_rgb(path, rgb):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _make(root, stems=("b", "a", "c"), size=(12, 16), masks=("a", "b")):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, stem in enumerate(stems):
        img = np.zeros((*size, 3), np.uint8)
        img[..., 0] = 200  # red channel: checks RGB (not BGR) order
        img[0, 0] = (i, i, i)
        _write_rgb(root / "images" / f"{stem}.png", img)
    for stem in masks:
        mask = np.zeros(size, np.uint8)
        mask[2:5, 3:6] = 1
        mask[0, :] = 255
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    return root


def test_sorted_order_rgb_and_optional_masks(tmp_path):
    ds = FolderDataset(_make(tmp_path))
    assert ds.stems == ["a", "b", "c"]
    assert len(ds) == 3 and not ds.has_masks
    a = ds[0]
    assert a.stem == "a" and a.image.dtype == np.uint8 and a.image.shape == (12, 16, 3)
    assert a.image[5, 5].tolist() == [200, 0, 0]
    assert a.mask is not None and a.mask.dtype == np.uint8
    assert set(np.unique(a.mask)) == {0, 1, 255} and a.mask[2:5, 3:6].all()
    assert ds[2].mask is None
    assert ds[-1].stem == "c"
    with pytest.raises(IndexError):
        ds[3]


def test_jpg_images_are_found(tmp_path):
    root = _make(tmp_path, stems=("a",), masks=())
    _write_rgb(root / "images" / "z.jpg", np.full((12, 16, 3), 90, np.uint8))
    assert FolderDataset(root).stems == ["a", "z"]


def test_require_masks_names_the_missing_one(tmp_path):
    with pytest.raises(DatasetError, match=r"1 of 3 images have no mask, e\.g\. c\.png"):
        FolderDataset(_make(tmp_path), require_masks=True)


def test_missing_images_folder_and_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"images: folder not found; expected ROOT/images"):
        FolderDataset(tmp_path / "nope")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no .png/.jpg images"):
        FolderDataset(tmp_path / "empty")


def test_duplicate_stems_rejected(tmp_path):
    root = _make(tmp_path, stems=("a",), masks=())
    _write_rgb(root / "images" / "a.jpg", np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="share the stem 'a'"):
        FolderDataset(root)


def test_mask_size_mismatch_names_file(tmp_path):
    root = _make(tmp_path, masks=())
    cv2.imwrite(str(root / "masks" / "a.png"), np.zeros((5, 5), np.uint8))
    ds = FolderDataset(root)
    with pytest.raises(DatasetError, match=r"masks/a\.png: mask size 5x5 differs from image size 16x12"):
        ds[0]


def test_mask_values_outside_allowed_set_name_file(tmp_path):
    root = _make(tmp_path, masks=())
    bad = np.zeros((12, 16), np.uint8)
    bad[0, 0] = 7
    cv2.imwrite(str(root / "masks" / "b.png"), bad)
    ds = FolderDataset(root)
    with pytest.raises(DatasetError, match=r"masks/b\.png: mask values \[7\] are outside .*label_map"):
        ds[1]


def test_label_map_allo_style_with_string_keys(tmp_path):
    root = _make(tmp_path, stems=("a",), masks=())
    raw = np.array([[0, 3, 8, 255], [8, 21, 0, 1]], np.uint8)
    raw = np.kron(raw, np.ones((6, 4), np.uint8))  # 12 x 16
    cv2.imwrite(str(root / "masks" / "a.png"), raw)
    ds = FolderDataset(root, label_map={"8": 1, "255": 255}, default_label=0)
    mask = ds[0].mask
    expected = np.where(raw == 8, 1, np.where(raw == 255, 255, 0))
    np.testing.assert_array_equal(mask, expected)
    # Without default_label unmapped ids keep their value and are rejected.
    with pytest.raises(DatasetError, match=r"mask values \[3, 21\]"):
        FolderDataset(root, label_map={8: 1})[0]


def test_palette_png_mask_keeps_indices(tmp_path):
    root = _make(tmp_path, stems=("a",), masks=())
    mask = np.zeros((12, 16), np.uint8)
    mask[4:8, 4:8] = 1
    img = Image.fromarray(mask, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.save(root / "masks" / "a.png")
    np.testing.assert_array_equal(FolderDataset(root)[0].mask, mask)
