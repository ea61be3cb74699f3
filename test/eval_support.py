"""Shared pieces of the evaluation tests (test_eval_*.py): the tiny model they score with, datasets."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

H, W = 40, 48
IMAGE_TOPIC = "/camera/image_raw"
MASK_TOPIC = "/camera/anomaly_mask"


EVAL_MODEL = {"threshold": 20.0, "perturb": 0.05, "proj_dim": 16}
""":func:`tiny_checkpoints.tiny_checkpoint` arguments of the evaluation tests' model: a smaller
nudge and projection than the default, whose NLL scores sit around the 20.0 threshold, so masks,
flags and metrics on :func:`make_dataset` are not degenerate."""


def make_dataset(
    root: Path, n: int = 8, *, grey: bool = False, seed: int = 0, drop_masks: tuple[int, ...] = ()
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Write ROOT/images/fNN.png and ROOT/masks/fNN.png (0 normal, 1 anomaly, 255 ignore band).

    Every other image has a magenta square (label 1) with an ignore (255) rim;
    ``drop_masks`` lists indices written without a mask.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:H, 0:W]
    images, masks = [], []
    for i in range(n):
        base = 90 + 20 * np.sin(xx / 5.0 + i) + 10 * np.cos(yy / 3.0)
        img = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], -1) + rng.normal(0, 4, (H, W, 3))
        mask = np.zeros((H, W), np.uint8)
        if i % 2 == 0:
            y, x = int(rng.integers(4, H - 18)), int(rng.integers(4, W - 18))
            mask[y - 2 : y + 14, x - 2 : x + 14] = 255
            mask[y : y + 12, x : x + 12] = 1
            img[y : y + 12, x : x + 12] = (255, 0, 255)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if grey:
            img = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        cv2.imwrite(str(root / "images" / f"f{i:02d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append(img)
        if i in drop_masks:
            masks.append(None)
        else:
            cv2.imwrite(str(root / "masks" / f"f{i:02d}.png"), mask)
            masks.append(mask)
    return images, masks


def sklearn_reference(checkpoint: Path, images: list[np.ndarray], masks: list[np.ndarray | None]) -> dict:
    """Pixel AUROC/AP/FPR95 and image AUROC computed independently (scikit-learn, exact)."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    from flowclas_ros.runtime import create_backend

    scores, labels, img_scores, img_labels = [], [], [], []
    with create_backend("torch", checkpoint) as backend:
        for image, mask in zip(images, masks):
            pred = backend.predict([image])[0]
            if mask is None:
                continue
            valid = mask != 255
            scores.append(pred.score_map[valid].astype(np.float64))
            labels.append(mask[valid])
            img_scores.append(pred.image_score)
            img_labels.append(bool((mask == 1).any()))
    s, y = np.concatenate(scores), np.concatenate(labels)
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auroc": roc_auc_score(y, s),
        "ap": average_precision_score(y, s),
        "fpr95": float(fpr[np.argmax(tpr >= 0.95)]),
        "image_auroc": roc_auc_score(img_labels, img_scores),
        "n_labelled": len(img_labels),
    }


def assert_same_metrics(got: dict, want: dict, keys: tuple[str, ...]) -> None:
    """``got[key]`` equals ``want[key]``: counts and strings exactly, floats to 1e-6 (or absolute near 0).

    The same frames, scored the same way, but in other batches and memory layouts: on an AMX Xeon a bag
    evaluation's AP differed from the folder's by 1e-8 relative (0.09560864921 vs 0.09560864003) and
    grey frames' score range by 1e-7, while every count matched. A wrong frame, channel order
    or mask moves the metrics by orders of magnitude more.
    """
    for key in keys:
        assert _close(got[key], want[key]), (key, got[key], want[key])


def _close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))
    return a == b
