"""ARCHITECTURE.md "Where to add: a dataset reader": register one, flowclas-eval --dataset reads it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from eval_support import EVAL_MODEL
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.data.images.folder import DatasetError
from flowclas_ros.data.readers.benchmarks import (
    BENCHMARKS,
    Benchmark,
    FileListDataset,
    open_benchmark,
    register_benchmark,
    unregister_benchmark,
)
from flowclas_ros.evaluation.cli import main as eval_main

LAYOUT = "ROOT/<stem>.jpg with ROOT/<stem>_gt.png (raw 7 = anomaly)"


def open_flat(root: Path) -> FileListDataset:
    """A made-up layout: images and their label PNGs side by side, raw id 7 marks anomalies."""
    images = sorted(root.glob("*.jpg"))
    if not images:
        raise DatasetError(f"{root}: no images; expected {LAYOUT}")
    masks = [root / f"{p.stem}_gt.png" for p in images]
    return FileListDataset(root, images, masks, label_map={7: 1, 0: 0}, default_label=255)


@pytest.fixture
def flat_reader():
    convention = "raw 7 -> 1 anomaly, 0 normal, other ids ignored"
    register_benchmark(Benchmark("flat_demo", LAYOUT, convention, open_flat))
    yield
    unregister_benchmark("flat_demo")


def _write_flat(root: Path, n: int = 4) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(60, 120, (56, 56, 3), dtype=np.uint8)
        label = np.zeros((56, 56), np.uint8)
        if i % 2:
            img[10:30, 20:40] = (255, 0, 255)
            label[10:30, 20:40] = 7
            label[0:2] = 3  # an id outside the map: ignored
        cv2.imwrite(str(root / f"s{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"s{i}_gt.png"), label)


def test_a_registered_reader_is_offered_and_evaluated_end_to_end(flat_reader, tmp_path):
    _write_flat(tmp_path / "flat")
    data, bench = open_benchmark("flat_demo", tmp_path / "flat")
    assert len(data) == 4 and set(np.unique(data.load_mask(1))) == {0, 1, 255}
    ckpt = tiny_checkpoint(tmp_path / "ckpt", **EVAL_MODEL)
    out = tmp_path / "eval"
    argv = ["--checkpoint", str(ckpt), "--data", str(tmp_path / "flat"), "--dataset", "flat_demo"]
    code = eval_main([*argv, "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and 0.0 <= metrics["ap"] <= 1.0
    assert metrics["source"]["dataset"] == "flat_demo"


def test_a_reader_name_is_registered_once(flat_reader):
    with pytest.raises(ValueError, match="registered already"):
        register_benchmark(BENCHMARKS["flat_demo"])
