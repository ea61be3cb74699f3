"""The image-level decision (``AnomalyResult.is_anomalous``), in one place for the node and the CLIs.

No numpy, no ROS: the node's settings, its result message and ``flowclas-eval``'s
label-free review all decide with these two functions, so a review of a recording
flags exactly the frames the node would have called anomalous.
"""

from __future__ import annotations

import math


def image_threshold_in_use(image_threshold: float | None, pixel_threshold: float | None) -> float | None:
    """The image threshold to decide with: ``image_threshold`` when finite, else ``pixel_threshold``.

    An older checkpoint without an ``image_threshold`` falls back to the pixel threshold
    (the former rule: the max of the map against the pixel threshold).

    Args:
        image_threshold: The calibrated (or given) image-score threshold, or None / NaN when unset.
        pixel_threshold: The pixel threshold in effect, or None when there is none.

    Returns:
        The threshold, or None when neither is known.
    """
    if image_threshold is not None and math.isfinite(image_threshold):
        return float(image_threshold)
    return None if pixel_threshold is None else float(pixel_threshold)


def is_anomalous(image_score: float, image_threshold: float) -> bool:
    """``image_score >= image_threshold`` (a NaN score is never anomalous)."""
    return bool(image_score >= image_threshold)
