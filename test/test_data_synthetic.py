from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.data.outliers.perlin import fractal_noise, perlin_mask, perlin_noise
from flowclas_ros.synthetic.make_dataset_cli import main as make_dataset
from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, SceneGenerator, generate_dataset

SMALL = SceneConfig(size=(64, 80))


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    counts = {"train": 2, "val": 1, "test": 2}
    generate_dataset(tmp_path / "a", seed=3, counts=counts, cfg=SMALL, progress=False)
    generate_dataset(tmp_path / "b", seed=3, counts=counts, cfg=SMALL, progress=False)
    generate_dataset(tmp_path / "c", seed=4, counts=counts, cfg=SMALL, progress=False)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert len(a) == 2 + 2 * 1 + 2 * 2 + 2  # images, masks, dataset.json, README.md
    differing = [k for k in a if k.endswith(".png") and a[k] != c[k]]
    assert len(differing) == len([k for k in a if k.endswith(".png")])


def test_layout_masks_and_splits(tmp_path):
    cfg = SceneConfig(size=(64, 80), anomaly_probability=1.0, max_anomalies=2, anomaly_area=(0.01, 0.05))
    summary = generate_dataset(
        tmp_path, seed=0, counts={"train": 3, "val": 2, "test": 6}, cfg=cfg, progress=False
    )
    assert not (tmp_path / "train" / "masks").exists()
    train = FolderDataset(tmp_path / "train")
    assert len(train) == 3 and train[0].image.shape == (64, 80, 3)
    test = FolderDataset(tmp_path / "test", require_masks=True)
    fractions = []
    for i in range(len(test)):
        mask = test[i].mask
        assert set(np.unique(mask)) <= {0, 1}
        fractions.append(mask.mean())
    # Every test frame got objects; each object is at most ~5% (sizing tolerance), at most 2 per frame.
    assert sum(f > 0 for f in fractions) >= 5
    assert max(fractions) <= 2 * 0.05 * 1.2
    listed = summary["frames"]["test"]
    assert [f["stem"] for f in listed] == test.stems
    for frame, frac in zip(listed, fractions):
        assert sum(o["area"] for o in frame["objects"]) == pytest.approx(frac, abs=1e-4)
        assert all(0 < o["area"] <= 0.05 * 1.2 for o in frame["objects"])
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert info["seed"] == 0 and info["counts"] == {"train": 3, "val": 2, "test": 6}
    assert "seed 0" in (tmp_path / "README.md").read_text()


def test_train_frames_never_have_anomalies():
    gen = SceneGenerator(1, SceneConfig(size=(48, 48), anomaly_probability=1.0))
    for i in range(4):
        scene = gen.frame("train", i)
        assert not scene.mask.any() and scene.objects == []
        assert scene.image.dtype == np.uint8 and scene.image.std() > 2  # not a blank frame
    assert gen.frame("test", 0).mask.any()


def test_ignore_band_marks_outline():
    cfg = SceneConfig(size=(64, 64), anomaly_probability=1.0, anomaly_area=(0.03, 0.05), ignore_band=1)
    scene = SceneGenerator(0, cfg).frame("val", 0)
    assert set(np.unique(scene.mask)) == {0, 1, 255}


def test_config_validation():
    with pytest.raises(ValueError, match="anomaly_kinds"):
        SceneConfig(anomaly_kinds=["unicorn"])
    with pytest.raises(ValueError, match="anomaly_area"):
        SceneConfig(anomaly_area=(0.1, 0.01))
    with pytest.raises(ValueError, match="split"):
        SceneGenerator(0, SMALL).frame("training", 0)


def test_cli_writes_refuses_existing_and_overwrites(tmp_path, capsys):
    args = [
        "--out",
        str(tmp_path / "d"),
        "--n-train",
        "1",
        "--n-val",
        "1",
        "--n-test",
        "1",
        "--size",
        "40",
        "48",
    ]
    assert make_dataset([*args, "--quiet"]) == 0
    assert (tmp_path / "d" / "val" / "masks").is_dir()
    assert make_dataset([*args, "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert make_dataset([*args, "--quiet", "--overwrite"]) == 0
    assert make_dataset([*args, "--quiet", "--overwrite", "--anomaly-prob", "2"]) == 2
    assert "--anomaly-prob" in capsys.readouterr().err


def test_perlin_noise_shapes_and_determinism():
    a = perlin_noise((30, 45), (3.5, 2), np.random.default_rng(0))
    b = perlin_noise((30, 45), (3.5, 2), np.random.default_rng(0))
    assert a.shape == (30, 45) and a.dtype == np.float32 and np.array_equal(a, b)
    assert np.abs(a).max() <= 1.5 and a.std() > 0.05
    f = fractal_noise((32, 32), (2, 2), np.random.default_rng(1))
    assert abs(f.mean()) < 1e-4 and f.std() == pytest.approx(1.0, abs=1e-3)
    m = perlin_mask((50, 40), np.random.default_rng(2), fraction=0.3)
    assert m.dtype == bool and m.mean() == pytest.approx(0.3, abs=0.02)
