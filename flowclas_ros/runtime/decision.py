"""The one anomaly decision (``score >= threshold``) and where calibration places a threshold.

Every place that decides "anomalous" uses :func:`at_or_above`: the node's mask, region
boxes and ``is_anomalous``, ``flowclas-predict``'s overlays, the evaluation reports and
the training's calibration check. It is the exact real-number comparison
``score >= threshold`` (NaN scores are never anomalous), whatever the dtypes: a float32
map compared with a Python float threshold would otherwise round the threshold to the
nearest float32 first (NumPy 2 promotion), and a pixel could then be anomalous in the
mask but not by the scalar rule.

Calibration places a threshold with :func:`place_threshold`. A threshold that sits one
float32 step above a calibration score flips on the last bit: torch, ONNX Runtime and
OpenVINO do not round alike, and a normal image exactly at the boundary is flagged by one
backend and not by another. So the threshold keeps a margin from the scores on both
sides:

* ``boundary`` is the highest score that must stay below the threshold, ``above`` the
  lowest one that must reach it (None: no such score).
* margin = ``THRESHOLD_MARGIN_REL`` × the score scale (the largest magnitude among the
  calibration scores and their spread), at least ``MIN_MARGIN_ULPS`` float32 steps;
* threshold = ``boundary + min(margin, (above - boundary) / 2)``: a full margin where
  the gap allows, else midway between the two scores (the most margin the data allows;
  two calibration scores closer than the backends' differences cannot be told apart by
  any threshold);
* rounded to a float32 value (the deployed maps are float32) that still lies in
  ``(boundary, above]``, so the calibrated count of flagged images holds exactly and the
  stored number compares the same in float32 and float64.

Backends that pass the export parity gate differ on the calibration scores by about
1e-6 of their magnitude (measured on the tiny test checkpoint: torch vs ONNX Runtime vs
OpenVINO f32); the 1e-4 margin leaves about two orders of magnitude. The pixel threshold
is a histogram bin edge at the target pixel FPR (``PixelMetrics.threshold_at_fpr``); it is
rounded up to float32 with :func:`float32_at_or_above`, which keeps every float32 pixel's
decision. Pixels are too many to keep a margin from each, so a few pixels of a mask can
still differ between backends; the image-level decision is the one kept identical.

The image-level decision (``AnomalyResult.is_anomalous``) is :func:`is_anomalous` with the
threshold :func:`image_threshold_in_use` picks: the node's settings, its result message and
``flowclas-eval``'s label-free review all decide with these, so a review of a recording flags
exactly the frames the node would have called anomalous.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

THRESHOLD_MARGIN_REL = 1e-4
"""Margin kept between a calibrated threshold and the calibration scores, relative to the score scale."""

MIN_MARGIN_ULPS = 16
"""The margin is at least this many float32 steps at the boundary score."""


def at_or_above(scores: np.ndarray | float, threshold: float) -> np.ndarray | bool:
    """The anomaly decision: ``score >= threshold``, exact for any float dtype; NaN is never anomalous.

    Args:
        scores: A score, or an array of scores (any float dtype; float32 maps stay float32).
        threshold: The decision threshold (a Python float, float64 semantics).

    Returns:
        A bool for a scalar score, else a bool array of the scores' shape.
    """
    if isinstance(scores, (float, int)):
        return bool(scores >= threshold)
    scores = np.asarray(scores)
    limit = float(threshold)
    if scores.dtype.kind == "f" and scores.dtype.itemsize < 8 and math.isfinite(limit):
        # The smallest value of the scores' dtype that is >= the threshold: comparing against
        # it in that dtype gives exactly the float64 comparison, without upcasting the map.
        limit = _round_up(limit, scores.dtype.type)
    result = scores >= limit
    return bool(result) if result.ndim == 0 else result


def _round_up(value: float, dtype: type) -> np.floating:
    """The smallest value of ``dtype`` that is >= ``value`` (inf when beyond its range)."""
    with np.errstate(over="ignore"):
        rounded = dtype(value)
    if float(rounded) < value:
        rounded = np.nextafter(rounded, dtype(np.inf))
    return rounded


def float32_at_or_above(value: float) -> float:
    """The smallest float32 value >= ``value``, as a Python float (how a threshold is stored).

    For float32 scores ``s >= value`` and ``s >= float32_at_or_above(value)`` agree.
    """
    return float(_round_up(float(value), np.float32))


def _float32_above(value: float) -> float:
    """The smallest float32 value strictly greater than ``value``."""
    up = _round_up(value, np.float32)
    if float(up) <= value:
        up = np.nextafter(up, np.float32(np.inf))
    return float(up)


def threshold_margin(scores: Sequence[float] | np.ndarray) -> float:
    """The margin :func:`place_threshold` keeps for calibration ``scores`` (see the module docstring)."""
    finite = np.asarray(scores, np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0
    scale = max(float(np.abs(finite).max()), float(finite.max() - finite.min()))
    ulp = float(np.spacing(np.float32(scale))) if scale > 0 else float(np.finfo(np.float32).tiny)
    return max(THRESHOLD_MARGIN_REL * scale, MIN_MARGIN_ULPS * ulp)


def place_threshold(boundary: float, above: float | None, margin: float) -> float:
    """A float32 threshold in ``(boundary, above]``, ``margin`` from ``boundary`` where the gap allows.

    Args:
        boundary: The highest calibration score that must stay below the threshold.
        above: The lowest calibration score that must reach it (``> boundary``); None if none.
        margin: Wanted distance from the scores (:func:`threshold_margin`).

    Returns:
        ``boundary + min(margin, (above - boundary) / 2)``, rounded to float32 within the interval.
    """
    boundary = float(boundary)
    if above is not None and not float(above) > boundary:
        raise ValueError(f"place_threshold: above ({above}) must be greater than boundary ({boundary})")
    step = margin if above is None else min(margin, (float(above) - boundary) / 2.0)
    placed = float(np.float32(boundary + step))
    if not placed > boundary:
        placed = _float32_above(boundary)
    if above is not None and placed > float(above):
        placed = float(above)  # no float32 value between them (a float64 ``mean`` score): the score itself
    return placed


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
    """``image_score >= image_threshold`` (:func:`at_or_above`; a NaN score is never anomalous)."""
    return bool(at_or_above(float(image_score), image_threshold))
