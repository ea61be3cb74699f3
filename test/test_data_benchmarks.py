"""Benchmark readers (flowclas-eval --dataset): each layout on a tiny generated folder, its labels, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from flowclas_ros.data.images.folder import DatasetError
from flowclas_ros.data.readers.benchmarks import BENCHMARKS, open_benchmark

H, W = 20, 24


def _image(path: Path, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return img


def _label(path: Path, values: np.ndarray, one_bit: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(bool) if one_bit else values.astype(np.uint8)).save(path)


def _raw(*ids: int) -> np.ndarray:
    """A label image whose column blocks hold ``ids`` in turn."""
    out = np.zeros((H, W), np.uint8)
    for k, value in enumerate(ids):
        out[:, k * (W // len(ids)) :] = value
    return out


def _load_all(name: str, root: Path):
    data, bench = open_benchmark(name, root)
    return data, bench, {s: data.load_mask(i, data.load_image(i).shape[:2]) for i, s in enumerate(data.stems)}


def test_road_anomaly_maps_2_to_anomaly(tmp_path):
    for i in range(2):
        _image(tmp_path / "frames" / f"img{i}.jpg", i)
        _label(tmp_path / "frames" / f"img{i}.labels" / "labels_semantic.png", _raw(0, 2, 255))
    data, bench, masks = _load_all("road_anomaly", tmp_path)
    assert data.stems == ["img0", "img1"]
    np.testing.assert_array_equal(masks["img0"], _raw(0, 1, 255))
    assert "2 -> 1" in bench.convention
    (tmp_path / "frames" / "img1.labels" / "labels_semantic.png").unlink()
    with pytest.raises(DatasetError, match=r"img1.labels/labels_semantic.png: label file not found \(1 of 2"):
        open_benchmark("road_anomaly", tmp_path)


@pytest.mark.parametrize("layout", ["authors", "pebal"])
def test_fishyscapes_lf_both_released_layouts(tmp_path, layout):
    base, image_dir = (tmp_path, "images") if layout == "authors" else (tmp_path / "LostAndFound", "original")
    _image(base / image_dir / "0000_04_Maurener_Weg_8_000000_000030_leftImg8bit.png", 0)
    _label(base / "labels" / "0000_04_Maurener_Weg_8_000000_000030_leftImg8bit.png", _raw(0, 1, 255))
    _, _, masks = _load_all("fishyscapes_lf", tmp_path)
    assert list(masks.values())[0].tolist() == _raw(0, 1, 255).tolist()


def test_smiyc_tracks_labelled_images_only_and_one_bit_masks(tmp_path):
    track = tmp_path / "dataset_ObstacleTrack"
    _image(track / "images" / "validation_1.webp", 0)
    _label(track / "labels_masks" / "validation_1_labels_semantic.png", _raw(0, 1, 255))
    _image(track / "images" / "test_1.webp", 1)  # test split: no label, not read
    _image(track / "images" / "validation_2.jpg", 2)
    _label(track / "labels_masks" / "validation_2_labels_semantic.png", _raw(0, 1), one_bit=True)
    data, _, masks = _load_all("smiyc", tmp_path)
    assert data.stems == ["validation_1", "validation_2"]
    np.testing.assert_array_equal(masks["validation_1"], _raw(0, 1, 255))
    np.testing.assert_array_equal(masks["validation_2"], _raw(0, 1))  # 1-bit: set pixel = anomaly
    assert data.n_one_bit_masks == 1
    (tmp_path / "dataset_AnomalyTrack").mkdir()
    with pytest.raises(DatasetError, match="holds both SMIYC tracks"):
        open_benchmark("smiyc", tmp_path)
    assert open_benchmark("smiyc", track)[0].stems == ["validation_1", "validation_2"]


def test_allo_semantic_ids_and_nested_layout(tmp_path):
    split = tmp_path / "test_v3"
    _image(split / "anomalous" / "scene1" / "images" / "0001_rock.png", 0)
    _label(split / "anomalous" / "scene1" / "masks" / "0001_rock.png", _raw(3, 8, 255))
    _image(split / "normal" / "scene1" / "images" / "0001_rock.png", 1)  # same file name, other scene
    _label(split / "normal" / "scene1" / "masks" / "0001_rock.png", _raw(0, 7))
    data, bench, masks = _load_all("allo", split)
    assert data.stems == ["anomalous/scene1/0001_rock", "normal/scene1/0001_rock"]
    np.testing.assert_array_equal(masks["anomalous/scene1/0001_rock"], _raw(0, 1, 255))
    np.testing.assert_array_equal(masks["normal/scene1/0001_rock"], np.zeros((H, W)))
    assert "8 -> 1" in bench.convention
    _label(split / "normal" / "scene1" / "masks" / "0001_rock.png", _raw(0, 9))
    with pytest.raises(DatasetError, match=r"mask values \[9\] are outside"):
        data.load_mask(1)


def test_mvtec_reader_moved_to_data(tmp_path):
    cat = tmp_path / "bottle"
    _image(cat / "test" / "good" / "000.png", 0)
    _image(cat / "test" / "broken" / "000.png", 1)
    _label(cat / "ground_truth" / "broken" / "000_mask.png", _raw(0, 255))
    data, _, masks = _load_all("mvtec", cat)
    assert data.stems == ["broken_000", "good_000"]
    np.testing.assert_array_equal(masks["broken_000"], _raw(0, 1))
    np.testing.assert_array_equal(masks["good_000"], np.zeros((H, W)))


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_wrong_layout_is_one_clear_error(tmp_path, name):
    _image(tmp_path / "images" / "a.png", 0)  # our folder layout, not the benchmark's
    (tmp_path / "masks").mkdir()
    if name in ("fishyscapes_lf",):
        (tmp_path / "images" / "a.png").unlink()
        (tmp_path / "images").rmdir()
    with pytest.raises(DatasetError) as err:
        open_benchmark(name, tmp_path)
    message = str(err.value)
    assert "\n" not in message and "expected" in message and str(tmp_path) in message, message
    with pytest.raises(DatasetError, match="unknown --dataset 'cityscapes'; one of: road_anomaly"):
        open_benchmark("cityscapes", tmp_path)


def test_eval_cli_road_anomaly_metrics_match_sklearn_and_record_the_convention(tmp_path):
    from eval_support import EVAL_MODEL, sklearn_reference
    from tiny_checkpoints import tiny_checkpoint

    from flowclas_ros.evaluation.cli import main

    images, masks = [], []
    for i in range(4):
        _image(tmp_path / "ra" / "frames" / f"f{i}.jpg", i)  # JPEG: score what decodes
        images.append(
            cv2.cvtColor(cv2.imread(str(tmp_path / "ra" / "frames" / f"f{i}.jpg")), cv2.COLOR_BGR2RGB)
        )
        raw = np.zeros((H, W), np.uint8)
        raw[4:12, 3 + 2 * i : 13 + 2 * i] = 2
        raw[0, :] = 255
        if i == 3:
            raw[raw == 2] = 0  # one normal image, so image AUROC is defined
        _label(tmp_path / "ra" / "frames" / f"f{i}.labels" / "labels_semantic.png", raw)
        masks.append(np.where(raw == 2, 1, raw).astype(np.uint8))
    ckpt = tiny_checkpoint(tmp_path / "ckpt", **EVAL_MODEL)
    out = tmp_path / "eval"
    argv = ["--checkpoint", str(ckpt), "--data", str(tmp_path / "ra"), "--dataset", "road_anomaly"]
    assert main([*argv, "--out", str(out), "--no-progress", "--examples", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ref = sklearn_reference(ckpt, images, masks)
    assert metrics["n_images"] == 4
    assert metrics["auroc"] == pytest.approx(ref["auroc"], abs=2e-3)
    assert metrics["ap"] == pytest.approx(ref["ap"], abs=5e-3)
    src = metrics["source"]
    assert src["dataset"] == "road_anomaly" and "2 -> 1" in src["label_convention"]
    assert metrics["refine"] == {"kind": "none"}
    assert "- dataset: road_anomaly; labels: raw 2 -> 1" in (out / "report.md").read_text()
    assert main([*argv[:4], "--dataset", "smiyc", "--out", str(tmp_path / "e2"), "--no-progress"]) == 1
