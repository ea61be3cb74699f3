"""The one decision rule (score >= threshold) and calibrated thresholds that do not flip on the last bit.

Issue 23: a calibrated image threshold one float32 step above a normal image's score flagged
that image through the deployed path. Thresholds now keep a margin from the calibration
scores (:mod:`flowclas_ros.runtime.decision`); these tests perturb the scores by float32
steps and run torch, ONNX Runtime and OpenVINO f32 on the same calibration images.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from tiny_checkpoints import tiny_checkpoint, tiny_export

from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.runtime import create_backend
from flowclas_ros.runtime.decision import (
    THRESHOLD_MARGIN_REL,
    at_or_above,
    float32_at_or_above,
    place_threshold,
    threshold_margin,
)
from flowclas_ros.runtime.postprocess import anomalous_fraction, anomaly_mask
from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset
from flowclas_ros.training.calibration import image_threshold_at_fpr

torch.set_num_threads(1)


def _ulps(values: np.ndarray, steps: int) -> np.ndarray:
    """``values`` (float32) moved by ``steps`` float32 steps (negative: down)."""
    out = np.asarray(values, np.float32).copy()
    target = np.float32(np.inf if steps > 0 else -np.inf)
    for _ in range(abs(steps)):
        out = np.nextafter(out, target)
    return out


def test_at_or_above_is_the_exact_comparison_for_float32_maps():
    rng = np.random.default_rng(0)
    for threshold in [0.1, 1 / 3, 0.8940096497535706, -2.7, 1e-30, 123.456789]:
        base = np.float32(threshold)
        scores = np.array([_ulps(base, k) for k in range(-3, 4)], np.float32)
        exact = scores.astype(np.float64) >= threshold
        assert np.array_equal(at_or_above(scores, threshold), exact), threshold
        for score, want in zip(scores, exact):
            assert at_or_above(float(score), threshold) is bool(want)
            assert at_or_above(score, threshold) is bool(want)  # a numpy scalar gives a bool too
    noisy = rng.random((5, 7)).astype(np.float32)
    noisy[0, 0] = np.nan
    assert not at_or_above(noisy, 0.0)[0, 0] and not at_or_above(float("nan"), 0.0)
    assert np.array_equal(anomaly_mask(noisy, 0.5) > 0, at_or_above(noisy, 0.5))
    assert anomalous_fraction(noisy, 0.5) == pytest.approx(float(at_or_above(noisy, 0.5).mean()))
    # Without the exact rule a float32 map rounds a float64 threshold to the nearest float32:
    # float32(0.7) < 0.7, yet NumPy's own float32 comparison calls it 'at or above 0.7'.
    just_below = np.float32(0.7)
    assert float(just_below) < 0.7 and (np.array([just_below]) >= 0.7)[0]
    assert not at_or_above(np.array([just_below]), 0.7)[0] and not at_or_above(float(just_below), 0.7)


def test_stored_pixel_threshold_keeps_every_float32_decision():
    for value in [0.1, 0.8940096497535706, -3.3, 5e-8]:
        stored = float32_at_or_above(value)
        assert float(np.float32(stored)) == stored and stored >= value
        scores = np.array([_ulps(np.float32(value), k) for k in range(-3, 4)], np.float32)
        assert np.array_equal(scores >= stored, scores.astype(np.float64) >= value)


@pytest.mark.parametrize("target_fpr", [0.0, 0.1, 0.25, 0.5])
def test_calibrated_image_threshold_survives_last_bit_differences(target_fpr):
    rng = np.random.default_rng(7)
    normal = (0.85 + 0.05 * rng.random(20)).astype(np.float32)
    normal[3] = np.float32(0.8940096497535706)  # the score of the issue
    threshold = image_threshold_at_fpr(normal, target_fpr)
    assert float(np.float32(threshold)) == threshold  # stored as float32: same in float32 and float64
    flagged = at_or_above(normal, threshold)
    assert flagged.sum() == int(np.floor(target_fpr * normal.size + 1e-9))
    margin = threshold_margin(normal)
    assert margin >= THRESHOLD_MARGIN_REL * float(normal.max())
    gap = np.abs(normal.astype(np.float64) - threshold).min()
    ulp = float(np.spacing(np.float32(threshold)))  # midway is rounded to a float32 value
    assert gap >= min(margin, _half_gap(normal, threshold)) - ulp
    # Every score moved by up to 64 float32 steps (either way): the same decisions.
    for steps in (-64, -8, -1, 1, 8, 64):
        assert np.array_equal(at_or_above(_ulps(normal, steps), threshold), flagged), steps
    # The rule it replaces: one float32 step above the boundary flips on the last bit.
    boundary = np.sort(normal)[::-1][int(flagged.sum())]
    old = float(np.nextafter(boundary, np.float32(np.inf)))
    assert at_or_above(_ulps(normal, 1), old).sum() > at_or_above(normal, old).sum()


def _half_gap(scores: np.ndarray, threshold: float) -> float:
    """Half the gap between the calibration scores on either side of ``threshold``."""
    below = scores[scores < threshold].max()
    above = scores[scores >= threshold]
    return np.inf if above.size == 0 else (float(above.min()) - float(below)) / 2


def test_threshold_goes_midway_when_two_scores_are_close():
    low = 0.5
    high = low + 1e-6  # closer than the margin (5e-5): midway keeps both sides apart
    threshold = place_threshold(low, high, threshold_margin([low, high]))
    assert low < threshold <= high and abs((threshold - low) - (high - threshold)) < 1e-7
    one_step = float(np.nextafter(np.float32(low), np.float32(1)))  # no room: the upper score itself
    assert place_threshold(low, one_step, 1e-3) == one_step
    ties = np.array([0.7, 0.7, 0.7, 0.2], np.float32)  # ties at the boundary all stay below
    assert not at_or_above(ties, image_threshold_at_fpr(ties, 0.5)).any()
    with pytest.raises(ValueError, match="must be greater"):
        place_threshold(0.5, 0.5, 1e-3)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A tiny checkpoint, its ONNX export and 10 calibration images (generated scenes, 56x56)."""
    root = tmp_path_factory.mktemp("decision")
    ckpt = tiny_checkpoint(root / "ckpt", threshold=3.0)
    generate_dataset(
        root / "data", seed=4, counts={"train": 0, "val": 10, "test": 0}, cfg=SceneConfig(size=(56, 56))
    )
    tiny_export(ckpt, root / "m.onnx")
    val = FolderDataset(root / "data" / "val")
    return ckpt, root / "m.onnx", [val.load_image(i) for i in range(len(val))]


def test_backends_decide_alike_on_the_calibration_images(deployed):
    ckpt, onnx_path, images = deployed
    kinds = [("torch", ckpt, {}), ("onnxruntime", onnx_path, {"intra_op_threads": 1})]
    if importlib.util.find_spec("openvino") is not None:
        kinds.append(("openvino", onnx_path, {"precision": "f32"}))
    scores = {}
    for kind, path, opts in kinds:
        with create_backend(kind, path, **opts) as backend:
            scores[kind] = np.array([p.image_score for p in backend.predict(images)])
    reference = scores["torch"]
    scale = float(np.abs(reference).max())
    for kind, got in scores.items():  # the margin is far wider than what the backends differ by
        assert np.abs(got - reference).max() <= 0.1 * THRESHOLD_MARGIN_REL * scale, (kind, got - reference)
    for target_fpr in (0.0, 0.1, 0.3, 0.5):  # thresholds between different pairs of images
        threshold = image_threshold_at_fpr(reference, target_fpr)
        decisions = {kind: at_or_above(got, threshold).tolist() for kind, got in scores.items()}
        assert sum(decisions["torch"]) == int(np.floor(target_fpr * len(images) + 1e-9))
        assert all(d == decisions["torch"] for d in decisions.values()), (target_fpr, decisions)
    if "openvino" not in scores:
        pytest.skip("openvino is not importable here: torch and ONNX Runtime checked, OpenVINO f32 not")
