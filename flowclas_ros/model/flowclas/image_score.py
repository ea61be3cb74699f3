"""Image-level score of one score map, in numpy (the deployment runtime has no torch)."""

from __future__ import annotations

import numpy as np


def image_score_np(score_map: np.ndarray, kind: str) -> float:
    """NumPy twin of :func:`flowclas_ros.model.flowclas.anomaly_map.image_score` for one (H, W) map."""
    if kind == "max":
        return float(np.max(score_map))
    if kind == "mean":
        return float(np.mean(score_map, dtype=np.float64))
    if kind == "p99":
        return float(np.percentile(score_map, 99.0))
    raise ValueError(f"score.image_score: unknown kind {kind!r} (expected max, mean or p99)")
