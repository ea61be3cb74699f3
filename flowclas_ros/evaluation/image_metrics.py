"""Exact image-level AUROC: image scores are few, so they are kept (two numbers per image)."""

from __future__ import annotations

from typing import Any

import numpy as np

from flowclas_ros.evaluation.labels import check_labels


def exact_auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Exact AUROC (Mann-Whitney U with tie correction) of binary ``labels``; None if one class is empty."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average rank of each distinct value (1-based), so ties share their rank.
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = avg_rank[inverse][labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def image_label_from_mask(mask: np.ndarray) -> bool | None:
    """An image is anomalous if any pixel is 1; None if every pixel is ignored."""
    mask = check_labels(mask)
    if (mask == 1).any():
        return True
    return False if (mask == 0).any() else None


class ImageMetrics:
    """Exact image-level AUROC over per-image scores (kept in memory: two numbers per image)."""

    def __init__(self) -> None:
        """Create empty metrics."""
        self._scores: list[float] = []
        self._labels: list[bool] = []

    def add(self, score: float, label: bool | None = None, mask: np.ndarray | None = None) -> None:
        """Add one image, labelled directly or from its pixel mask.

        An image whose mask is entirely ignore (255) is skipped.
        """
        if (label is None) == (mask is None):
            raise ValueError("give exactly one of label or mask")
        if mask is not None:
            label = image_label_from_mask(mask)
            if label is None:
                return
        if not np.isfinite(score):
            raise ValueError(f"image score must be finite, got {score}")
        self._scores.append(float(score))
        self._labels.append(bool(label))

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch of image scores and boolean / 0-1 labels."""
        scores = np.asarray(scores, np.float64).ravel()
        labels = np.asarray(labels).ravel()
        if scores.shape != labels.shape:
            raise ValueError(f"{scores.size} image scores but {labels.size} labels")
        for s, y in zip(scores, labels):
            self.add(float(s), label=bool(y))

    def merge(self, other: ImageMetrics) -> None:
        """Append another instance's images."""
        self._scores.extend(other._scores)
        self._labels.extend(other._labels)

    @property
    def scores(self) -> np.ndarray:
        """All image scores so far."""
        return np.asarray(self._scores, np.float64)

    @property
    def labels(self) -> np.ndarray:
        """All image labels so far (True = anomalous)."""
        return np.asarray(self._labels, bool)

    def compute(self) -> dict[str, Any]:
        """Return ``image_auroc`` (None if one class is missing), ``n_images``, ``n_anomalous_images``."""
        return {
            "image_auroc": exact_auroc(self.scores, self.labels),
            "n_images": len(self._scores),
            "n_anomalous_images": int(sum(self._labels)),
        }
