"""Label conventions of masks: 0 normal, 1 anomaly, 255 ignore."""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = 255
"""Pixels with this label are excluded from every metric."""


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as uint8 after checking it only holds 0, 1 or 255.

    Raises:
        ValueError: Any other value, naming the offending values.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers 0/1/{IGNORE_LABEL}, got dtype {labels.dtype}")
    bad = (labels != 0) & (labels != 1) & (labels != IGNORE_LABEL)
    if bad.any():
        values = np.unique(labels[bad])[:8].tolist()
        raise ValueError(f"labels must be 0 (normal), 1 (anomaly) or {IGNORE_LABEL} (ignore); found {values}")
    return labels.astype(np.uint8, copy=False)
