"""Streaming accumulation of per-frame results: pixel/image metrics, latencies and report examples.

Memory is bounded: pixel metrics are histograms, image metrics and latencies
are a few numbers per frame, and only ``n_examples`` thumbnails per end are
kept. The one buffer is the score-range warm-up (below).

Score range: the pixel histogram needs a fixed range. Unless one is given,
it is fixed from the first ``range_warmup`` labelled frames (their scores are
held until then), widened by ``range_margin`` of their span on each side.
For the likelihood score ``1 - exp(...)`` the top is capped at 1, which no
score exceeds. Later scores outside the range fall into the end bins and are
counted in ``pixel.n_clipped`` (and warned about). The range depends only on
the frame order and content, so the same frames give the same metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowclas_ros.evaluation.examples import Example, ExampleKeeper, make_example
from flowclas_ros.evaluation.image_metrics import ImageMetrics, exact_auroc
from flowclas_ros.evaluation.labels import IGNORE_LABEL
from flowclas_ros.evaluation.metrics import DEFAULT_NUM_BINS, PixelMetrics

_FRAME_AUROC_MAX_PIXELS = 1 << 16
"""Per-frame AUROC (only used to rank report examples) runs on at most this many pixels."""


def percentiles(values: list[float] | np.ndarray) -> dict[str, float | None]:
    """``{"p50", "p90", "p99", "mean", "max"}`` of ``values`` (linear interpolation); None when empty."""
    arr = np.asarray(values, np.float64)
    if arr.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(arr.mean()),
        "max": float(arr.max()),
    }


def frame_auroc(score_map: np.ndarray, mask: np.ndarray) -> float | None:
    """Exact pixel AUROC of one frame (ignore label excluded); None unless both classes are present."""
    valid = mask != IGNORE_LABEL
    labels = mask[valid]
    if labels.size == 0 or labels.min() == labels.max():
        return None
    scores = score_map[valid]
    if scores.size > _FRAME_AUROC_MAX_PIXELS:  # a regular subsample is plenty for ranking frames
        step = -(-scores.size // _FRAME_AUROC_MAX_PIXELS)
        scores, labels = scores[::step], labels[::step]
    return exact_auroc(scores, labels)


@dataclass
class FrameCounts:
    """How many frames went where."""

    n_frames: int = 0
    n_with_mask: int = 0
    n_unpaired: int = 0
    n_fully_ignored: int = 0


@dataclass
class EvalAccumulator:
    """Accumulates evaluation results frame by frame (see the module doc).

    Attributes:
        score_kind: ``likelihood`` or ``nll`` (the checkpoint's ``score.kind``); sets the range cap.
        score_range: Fixed (low, high) for the pixel histogram, or None for the warm-up range.
        num_bins: Histogram bins.
        range_warmup: Labelled frames used to fix the range.
        range_margin: Fraction of the warm-up span added on each side.
        n_examples: Frames kept at each end for the report.
    """

    score_kind: str = "likelihood"
    score_range: tuple[float, float] | None = None
    num_bins: int = DEFAULT_NUM_BINS
    range_warmup: int = 8
    range_margin: float = 0.5
    n_examples: int = 4
    pixel: PixelMetrics | None = None
    images: ImageMetrics = field(default_factory=ImageMetrics)
    counts: FrameCounts = field(default_factory=FrameCounts)
    latency_ms: list[float] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)
    image_scores: list[float] = field(default_factory=list)
    score_min: float = float("inf")
    score_max: float = float("-inf")

    def __post_init__(self) -> None:
        self._warm: list[tuple[np.ndarray, np.ndarray]] = []
        self.by_frame_auroc = ExampleKeeper(self.n_examples)
        self.by_image_score = ExampleKeeper(self.n_examples)
        if self.score_range is not None:
            self.pixel = PixelMetrics(tuple(self.score_range), self.num_bins)

    def add(
        self,
        name: str,
        image: np.ndarray,
        mask: np.ndarray | None,
        score_map: np.ndarray,
        image_score: float,
        latency_ms: float | None = None,
        model_ms: float | None = None,
    ) -> None:
        """Add one evaluated frame.

        Args:
            name: Frame name (for the report).
            image: (H, W, 3) uint8 RGB input.
            mask: (H, W) labels 0/1/255, or None for an unpaired frame.
            score_map: (H, W) float scores at the image resolution.
            image_score: Image-level score.
            latency_ms: Per-frame latency to record (offline: predict time; live: end to end).
            model_ms: Model forward time to record.

        Raises:
            ValueError: Mask and score map shapes differ, or scores are NaN/inf.
        """
        c = self.counts
        c.n_frames += 1
        if latency_ms is not None:
            self.latency_ms.append(float(latency_ms))
        if model_ms is not None:
            self.model_ms.append(float(model_ms))
        self.image_scores.append(float(image_score))
        if score_map.size:
            self.score_min = min(self.score_min, float(np.min(score_map)))
            self.score_max = max(self.score_max, float(np.max(score_map)))
        auroc = None
        if mask is None:
            c.n_unpaired += 1
        else:
            if mask.shape != score_map.shape:
                raise ValueError(f"{name}: mask shape {mask.shape} != score map shape {score_map.shape}")
            c.n_with_mask += 1
            if bool((mask == IGNORE_LABEL).all()):
                c.n_fully_ignored += 1
            else:
                self.images.add(image_score, mask=mask)
                self._add_pixels(score_map, mask)
                auroc = frame_auroc(score_map, mask)

        def build(key: float) -> Example:
            return make_example(name, key, image, score_map, mask, image_score)

        if auroc is not None:
            self.by_frame_auroc.offer(auroc, lambda: build(auroc))
        self.by_image_score.offer(image_score, lambda: build(image_score))

    def _add_pixels(self, score_map: np.ndarray, mask: np.ndarray) -> None:
        if self.pixel is not None:
            self.pixel.update(score_map, mask)
            return
        self._warm.append((np.array(score_map, np.float32, copy=True), mask.copy()))
        if len(self._warm) >= self.range_warmup:
            self.flush()

    def flush(self) -> None:
        """Fix the score range from the frames seen so far and bin them (called at the end too)."""
        if self.pixel is not None or not self._warm:
            return
        valid = [s[m != IGNORE_LABEL] for s, m in self._warm]
        low = min(float(v.min()) for v in valid if v.size)
        high = max(float(v.max()) for v in valid if v.size)
        pad = self.range_margin * (high - low) if high > low else max(1.0, abs(low))
        # The likelihood score 1 - exp(x) never exceeds 1: capping there loses nothing at the top.
        top = 1.0 if self.score_kind == "likelihood" and high <= 1.0 else high + pad
        self.pixel = PixelMetrics((low - pad, top), self.num_bins)
        for scores, mask in self._warm:
            self.pixel.update(scores, mask)
        self._warm.clear()

    def examples(self) -> tuple[str, list[Example], list[Example]]:
        """The report's ``(ranking, worst, best)`` frames.

        Ranked by per-frame pixel AUROC when any frame has both classes, else by image
        score (``worst`` = least anomalous looking, ``best`` = most).
        """
        if len(self.by_frame_auroc):
            return "frame_auroc", self.by_frame_auroc.lowest(), self.by_frame_auroc.highest()
        return "image_score", self.by_image_score.lowest(), self.by_image_score.highest()

    def pixel_results(self) -> dict[str, Any]:
        """``PixelMetrics.compute()`` (all None when no labelled pixel was seen)."""
        self.flush()
        if self.pixel is None:
            return PixelMetrics().compute()
        return self.pixel.compute()

    def threshold_summary(self, threshold: float | None, source: str) -> dict[str, Any] | None:
        """Precision/recall/IoU/FPR at ``threshold``; with None, at the 5 % pixel-FPR threshold.

        Returns None without labelled pixels of both classes.
        """
        self.flush()
        if self.pixel is None:
            return None
        res = self.pixel.compute()
        if res["n_neg"] == 0:
            return None
        if threshold is None:
            threshold, source = self.pixel.threshold_at_fpr(0.05), "pixel FPR 5% on this data"
        return {"source": source, **self.pixel.at_threshold(float(threshold))}
