"""SAM2 refinement: the authors' modal-bin rule on hand-made masks, and the full path with a random SAM2."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from eval_support import EVAL_MODEL
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.evaluation.predict_cli import main as predict_main
from flowclas_ros.runtime import create_backend
from flowclas_ros.runtime.mask_refine import refine_with_masks
from flowclas_ros.runtime.sam2_refine import Sam2Error, Sam2Refiner, build_sam2_model, parse_generator_options

torch.set_num_threads(2)
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# A random SAM2 predicts IoU ~0.54 and stability ~0: the authors' thresholds would keep no mask.
TEST_OPTIONS = ["points_per_side=1", "pred_iou_thresh=0", "stability_score_thresh=0"]


def _direct(score_map: np.ndarray, masks: list[np.ndarray], num_bins: int = 20) -> np.ndarray:
    """The rule written out with python loops and float64 edges (independent of numpy.histogram)."""
    out = score_map.astype(np.float32).copy()
    for mask in masks:
        coords = list(zip(*np.nonzero(mask)))
        values = [float(out[c]) for c in coords]
        lo, hi = min(values), max(values)
        width = (hi - lo) / num_bins
        edges = [lo + k * width for k in range(num_bins)] + [hi]
        counts = [0] * num_bins
        for v in values:
            k = num_bins - 1 if v == hi else int((v - lo) // width) if width > 0 else 0
            while k > 0 and v < edges[k]:  # float rounding of the division
                k -= 1
            while k < num_bins - 1 and v >= edges[k + 1]:
                k += 1
            counts[k] += 1
        mode = counts.index(max(counts))
        low, high = edges[mode], edges[mode + 1]
        inside = [v for v in values if low <= v < high]
        if not inside:
            continue
        mean = np.float32(np.mean(np.asarray(inside, np.float32)))
        for c in coords:
            if out[c] < np.float32(low) or out[c] > np.float32(high):
                out[c] = mean
    return out


def test_rule_matches_direct_computation_on_hand_made_overlapping_masks():
    rng = np.random.default_rng(0)
    h, w = 30, 40
    score = rng.normal(0.2, 0.05, (h, w)).astype(np.float32)
    score[5:12, 5:15] = rng.normal(0.9, 0.02, (7, 10))  # an "object" with a few outliers
    score[6, 6], score[10, 12] = 0.1, 0.3
    a = np.zeros((h, w), bool)
    a[4:13, 4:16] = True  # object plus a rim of background
    b = np.zeros((h, w), bool)
    b[10:25, 10:35] = True  # overlaps a: sees a's replacements
    c = np.zeros((h, w), bool)
    c[0, 0] = True  # one pixel: min == max, empty modal set, untouched
    refined = refine_with_masks(score, [a, b, c])
    np.testing.assert_array_equal(refined, _direct(score, [a, b, c]))
    assert refined.dtype == np.float32
    assert refined[6, 6] != score[6, 6] and refined[6, 6] > 0.8  # outlier pulled to the object's level
    assert refined[0, 0] == score[0, 0]
    np.testing.assert_array_equal(refined[~(a | b)], score[~(a | b)])
    # Order matters where masks overlap (sequential, in place) — as in the authors' loop.
    assert not np.array_equal(refine_with_masks(score, [b, a]), refined)
    np.testing.assert_array_equal(refine_with_masks(score, [b, a]), _direct(score, [b, a]))


def test_rule_keeps_the_modal_bins_upper_edge_and_skips_constant_masks():
    score = np.array([[0.0, 0.0, 0.0, 1.0, 0.5]], np.float32)
    mask = np.ones_like(score, bool)
    # 2 bins: [0, 0.5) holds three zeros (mode), mean 0; 0.5 is on the upper edge: kept; 1.0 > 0.5: replaced.
    np.testing.assert_array_equal(refine_with_masks(score, [mask], num_bins=2), [[0, 0, 0, 0, 0.5]])
    flat = np.full((3, 3), 0.7, np.float32)
    np.testing.assert_array_equal(refine_with_masks(flat, [np.ones((3, 3), bool)]), flat)
    with pytest.raises(ValueError, match="mask 0: shape"):
        refine_with_masks(flat, [np.ones((2, 3), bool)])


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory) -> Path:
    """A random-init SAM2.1 Hiera-T, built from its packaged config and saved in SAM2's format."""
    torch.manual_seed(0)
    model = build_sam2_model(SAM2_CONFIG)
    path = tmp_path_factory.mktemp("sam2") / "sam2_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_full_path_predict_refine_sam2_equals_rule_on_sam2_masks(sam2_checkpoint, tmp_path):
    """flowclas-predict --refine sam2 == the rule applied to the masks SAM2 gives for that image."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    image[10:30, 12:36] = (250, 20, 200)
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ckpt = tiny_checkpoint(tmp_path / "ckpt", **EVAL_MODEL)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(ckpt), "--input", str(tmp_path / "frame.png"), "--out", str(out)]
    argv += ["--refine", "sam2", "--sam2-checkpoint", str(sam2_checkpoint), "--sam2-config", SAM2_CONFIG]
    argv += [item for option in TEST_OPTIONS for item in ("--sam2-option", option)] + ["--no-progress"]
    assert predict_main(argv) == 0
    refined = np.load(out / "frame.npy")

    refiner = Sam2Refiner.from_files(sam2_checkpoint, SAM2_CONFIG, **parse_generator_options(TEST_OPTIONS))
    masks = refiner.masks(image)
    assert masks and all(m.shape == image.shape[:2] and m.dtype == bool and m.any() for m in masks)
    with create_backend("torch", ckpt) as backend:
        raw = backend.predict([image])[0].score_map
    np.testing.assert_array_equal(refined, refine_with_masks(raw, masks))
    assert not np.array_equal(refined, raw)


def test_sam2_setup_errors_are_one_line(sam2_checkpoint, tmp_path, capsys):
    with pytest.raises(Sam2Error, match="is not a config of the sam2 package; use one of: configs/"):
        build_sam2_model("my/own.yaml")
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"not_a_sam2_key": torch.zeros(2)}}, wrong)
    with pytest.raises(
        Sam2Error,
        match=r"does not match --sam2-config .*missing: .*\(\+\d+ more\); unexpected: not_a_sam2_key$",
    ):
        Sam2Refiner.from_files(wrong, SAM2_CONFIG)
    with pytest.raises(Sam2Error, match="--sam2-option 'points=3'"):
        parse_generator_options(["points=3"])
    with pytest.raises(Sam2Error, match="needs an integer"):
        parse_generator_options(["points_per_side=many"])

    ckpt = tiny_checkpoint(tmp_path / "ckpt", **EVAL_MODEL)
    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    base = ["--checkpoint", str(ckpt), "--input", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]
    cases = [
        (["--refine", "sam2", "--sam2-config", SAM2_CONFIG], "needs --sam2-checkpoint"),
        (
            [
                "--refine",
                "sam2",
                "--sam2-checkpoint",
                str(tmp_path / "none.pt"),
                "--sam2-config",
                SAM2_CONFIG,
            ],
            "does not exist",
        ),
    ]
    for extra, message in cases:
        assert predict_main([*base, *extra, "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()

    from flowclas_ros.evaluation.cli import main as eval_main

    (tmp_path / "data" / "images").mkdir(parents=True)
    eval_argv = ["--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "e")]
    assert eval_main([*eval_argv, "--refine", "sam2", "--sam2-config", SAM2_CONFIG]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "flowclas-eval: error: --refine sam2 needs --sam2-checkpoint F (a SAM2 .pt) and --sam2-config NAME"
    )
    assert eval_main([*eval_argv, "--sam2-option", "points_per_side=4"]) == 1
    assert "only apply to --refine sam2" in capsys.readouterr().err


class _Boom:
    def __reduce__(self):
        return (Path("/tmp/flowclas_sam2_pwned").touch, ())


def test_malicious_sam2_checkpoint_is_refused_without_running_code(tmp_path):
    marker = Path("/tmp/flowclas_sam2_pwned")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Boom()}))
    with pytest.raises(Sam2Error, match="not a loadable SAM2 checkpoint"):
        Sam2Refiner.from_files(evil, SAM2_CONFIG)
    assert not marker.exists()
