"""Streaming, memory-bounded anomaly-segmentation metrics.

Pixel level (:class:`PixelMetrics`): AUROC, AP and FPR at 95 % TPR, the
anomaly class positive, label 255 ignored; the definitions match
scikit-learn's ``roc_auc_score``, ``average_precision_score`` (step-wise, no
interpolation) and ``roc_curve`` evaluated on the binned scores.

Binning: scores fall into ``num_bins`` uniform bins over ``score_range``; the
state is two int64 count arrays, so memory is fixed (``2 * num_bins * 8``
bytes, 4 MiB at the default 2**18 bins) whatever the number of images.
Values outside the range are clipped into the end bins and counted
(``n_clipped``). The default range (0, 1) fits the default score
``1 - exp(mean log-likelihood)``. The NLL score is unbounded: pass a range
that covers it, or ``score_range=None`` to fix the range from the first
update's min/max widened by ``adaptive_margin`` of the span on each side.
Use a fixed range for distributed training so every rank bins identically.

Error bound: binning only merges scores that fall in the same bin, so the
binned metrics are the exact metrics of the quantised scores. Against the
exact metrics of the raw scores:

* ``|AUROC_binned - AUROC_exact| <= 0.5 * sum_b pos_b * neg_b / (P * N)``
  (reported as ``auroc_error_bound``);
* ``0 <= FPR95_binned - FPR95_exact <= neg_k / N`` for the bin ``k`` where
  the TPR crosses 95 % (reported as ``fpr95_error_bound``);
* AP has no equally simple bound; with fine bins it agrees with
  scikit-learn to < 1e-4 in the tests.

Image level (:class:`ImageMetrics`): image scores are few, so they are kept
exactly (two numbers per image) and AUROC is exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowclas_ros.evaluation.image_metrics import ImageMetrics, exact_auroc, image_label_from_mask
from flowclas_ros.evaluation.labels import IGNORE_LABEL, check_labels

__all__ = [
    "DEFAULT_NUM_BINS",
    "IGNORE_LABEL",
    "ImageMetrics",
    "PixelMetrics",
    "check_labels",
    "exact_auroc",
    "image_label_from_mask",
]

DEFAULT_NUM_BINS = 2**18


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


class PixelMetrics:
    """Histogram-based pixel AUROC / AP / FPR95, streaming and mergeable.

    Example for DDP (all ranks must use the same fixed ``score_range``)::

        t = torch.from_numpy(metrics.state)  # shares memory with the metric
        torch.distributed.all_reduce(t)      # sums counts in place

    Attributes:
        state: Flat int64 array holding all counts; ``counts`` and the
            ignored/clipped tallies are views into it.
        counts: (2, num_bins) view; row 0 normal pixels, row 1 anomalous.
    """

    def __init__(
        self,
        score_range: tuple[float, float] | None = (0.0, 1.0),
        num_bins: int = DEFAULT_NUM_BINS,
        adaptive_margin: float = 0.5,
    ) -> None:
        """Create empty metrics.

        Args:
            score_range: (low, high) binned uniformly; None = adaptive (see module doc).
            num_bins: Number of histogram bins (>= 2).
            adaptive_margin: Fraction of the first batch's span added on each
                side when ``score_range`` is None.
        """
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_bins = int(num_bins)
        self.adaptive_margin = float(adaptive_margin)
        self.range: tuple[float, float] | None = None
        if score_range is not None:
            self._set_range(*score_range)
        self.state = np.zeros(2 * self.num_bins + 3, np.int64)
        self.counts = self.state[: 2 * self.num_bins].reshape(2, self.num_bins)
        self._aux = self.state[2 * self.num_bins :]  # ignored, clipped below, clipped above

    def _set_range(self, low: float, high: float) -> None:
        low, high = float(low), float(high)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise ValueError(f"score_range must be finite with high > low, got ({low}, {high})")
        self.range = (low, high)
        self._scale = self.num_bins / (high - low)

    @property
    def n_ignored(self) -> int:
        """Pixels with the ignore label seen so far."""
        return int(self._aux[0])

    @property
    def n_clipped(self) -> int:
        """Valid pixels whose score fell outside the range (counted in the end bins)."""
        return int(self._aux[1] + self._aux[2])

    @property
    def bin_edges(self) -> np.ndarray:
        """The num_bins + 1 bin edges in score units."""
        if self.range is None:
            raise ValueError("no score range yet (adaptive range is fixed by the first update)")
        return np.linspace(self.range[0], self.range[1], self.num_bins + 1)

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add one batch of pixels (any shape; ``scores`` and ``labels`` must match).

        Raises:
            ValueError: Shape mismatch, NaN/inf score, or a label not in {0, 1, 255}.
        """
        scores = np.asarray(scores)
        labels = np.asarray(labels)
        if scores.shape != labels.shape:
            raise ValueError(f"scores shape {scores.shape} != labels shape {labels.shape}")
        lab = (labels.view(np.uint8) if labels.dtype == bool else labels).ravel()
        if lab.dtype != np.uint8:
            lab = check_labels(lab)
        n_ignored = 0
        if lab.size and lab.max() > 1:  # only 0/1 is the common case: one cheap reduction
            present = np.bincount(lab, minlength=256)
            if present[2:IGNORE_LABEL].any():
                check_labels(lab)  # raises, naming the bad values
            n_ignored = int(present[IGNORE_LABEL])
        self._aux[0] += n_ignored
        if n_ignored == lab.size:
            return
        s = scores.ravel()
        if s.dtype not in (np.float32, np.float64):
            s = s.astype(np.float64)
        if n_ignored:
            keep = lab != IGNORE_LABEL
            s, lab = s[keep], lab[keep]
        lo, hi = float(s.min()), float(s.max())  # NaN and inf propagate into min/max
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("scores contain NaN or inf on non-ignored pixels")
        if self.range is None:
            pad = self.adaptive_margin * (hi - lo) if hi > lo else max(1.0, abs(lo))
            self._set_range(lo - pad, hi + pad)
        low, high = self.range
        if lo < low:
            self._aux[1] += int(np.count_nonzero(s < low))
        if hi > high:
            self._aux[2] += int(np.count_nonzero(s > high))
        # Bin in the scores' own precision (float32 stays float32: monotone, and exact for the
        # default range whose scale is a power of two); clip before the int cast.
        pos = (s - low) * self._scale
        np.clip(pos, 0, self.num_bins - 1, out=pos)
        idx = pos.astype(np.intp)
        idx += lab.astype(np.intp) * self.num_bins  # row 1 for anomalies: one bincount for both rows
        if idx.size < self.num_bins // 4:  # small batch: skip allocating a full-size histogram
            np.add.at(self.state, idx, 1)
        else:
            self.state[: 2 * self.num_bins] += np.bincount(idx, minlength=2 * self.num_bins)

    def merge(self, other: PixelMetrics) -> None:
        """Add another instance's counts (same bins and range) into this one."""
        if other.num_bins != self.num_bins:
            raise ValueError(f"cannot merge metrics with {other.num_bins} and {self.num_bins} bins")
        if other.range is None:
            return
        if self.range is None:
            self._set_range(*other.range)
        elif self.range != other.range:
            raise ValueError(f"cannot merge metrics with ranges {other.range} and {self.range}")
        self.state += other.state

    def reset(self) -> None:
        """Zero all counts (the score range is kept)."""
        self.state[:] = 0

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-bin (pos, neg) and cumulative (tp, fp), ordered from the highest score down."""
        pos = self.counts[1, ::-1].astype(np.float64)
        neg = self.counts[0, ::-1].astype(np.float64)
        return pos, neg, np.cumsum(pos), np.cumsum(neg)

    def compute(self) -> dict[str, Any]:
        """Return the metrics; AUROC/AP/FPR95 are None when a class has no pixels.

        Returns:
            Dict with ``auroc``, ``ap``, ``fpr95``, ``auroc_error_bound``,
            ``fpr95_error_bound``, ``n_pos``, ``n_neg``, ``n_ignored``,
            ``n_clipped`` and ``score_range``.
        """
        pos, neg, tp, fp = self._cumulative()
        n_pos, n_neg = (float(tp[-1]), float(fp[-1])) if tp.size else (0.0, 0.0)
        out: dict[str, Any] = {
            "auroc": None,
            "ap": None,
            "fpr95": None,
            "auroc_error_bound": None,
            "fpr95_error_bound": None,
            "n_pos": int(n_pos),
            "n_neg": int(n_neg),
            "n_ignored": self.n_ignored,
            "n_clipped": self.n_clipped,
            "score_range": list(self.range) if self.range else None,
        }
        if n_pos == 0 or n_neg == 0:
            return out
        # Trapezoid over bins: a tie (same bin) counts one half.
        out["auroc"] = float(np.dot(neg, tp - 0.5 * pos) / (n_pos * n_neg))
        out["auroc_error_bound"] = float(0.5 * np.dot(pos, neg) / (n_pos * n_neg))
        has_pos = pos > 0
        precision = tp[has_pos] / (tp[has_pos] + fp[has_pos])
        out["ap"] = float(np.dot(pos[has_pos], precision) / n_pos)
        # Same float comparison as sklearn's roc_curve: tpr = tp / tp[-1] >= 0.95.
        k = int(np.argmax(tp / n_pos >= 0.95))
        out["fpr95"] = float(fp[k] / n_neg)
        out["fpr95_error_bound"] = float(neg[k] / n_neg)
        return out

    def threshold_at_fpr(self, target_fpr: float = 0.05) -> float:
        """Lowest bin edge ``t`` such that the normal-pixel FPR of ``score >= t`` is <= target.

        Accurate to one bin width. Returns the range's upper end if even the
        top bin exceeds the target.

        Raises:
            ValueError: No normal pixels seen, or target outside [0, 1].
        """
        if not 0.0 <= target_fpr <= 1.0:
            raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
        _, _, _, fp = self._cumulative()
        if fp.size == 0 or fp[-1] == 0 or self.range is None:
            raise ValueError("threshold_at_fpr needs at least one normal (label 0) pixel")
        ok = np.nonzero(fp / fp[-1] <= target_fpr)[0]
        if ok.size == 0:
            return float(self.range[1])
        return float(self.bin_edges[self.num_bins - 1 - int(ok[-1])])

    def at_threshold(self, threshold: float) -> dict[str, float | None]:
        """Precision, recall, IoU and FPR of the anomaly class for ``score >= threshold``.

        The threshold is rounded to the nearest bin edge (exact for values
        returned by :meth:`threshold_at_fpr`).
        """
        if self.range is None:
            raise ValueError("no pixels seen yet")
        edge = int(np.clip(np.rint((threshold - self.range[0]) * self._scale), 0, self.num_bins))
        tp = float(self.counts[1, edge:].sum())
        fp = float(self.counts[0, edge:].sum())
        n_pos = float(self.counts[1].sum())
        n_neg = float(self.counts[0].sum())
        return {
            "threshold": float(threshold),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, n_pos),
            "iou": _ratio(tp, n_pos + fp),
            "fpr": _ratio(fp, n_neg),
        }

    def curves(self, max_points: int = 512) -> dict[str, dict[str, np.ndarray]]:
        """ROC and PR curves for plotting, downsampled evenly along the curve length.

        Returns:
            ``{"roc": {"fpr", "tpr", "thresholds"}, "pr": {"recall", "precision", "thresholds"}}``;
            points ordered by decreasing threshold; the ROC starts at (0, 0).
        """
        pos, neg, tp, fp = self._cumulative()
        if tp.size == 0 or tp[-1] == 0 or fp[-1] == 0:
            raise ValueError("curves need both normal and anomalous pixels")
        used = (pos + neg) > 0
        thresholds = self.bin_edges[:-1][::-1][used]
        tpr, fpr = tp[used] / tp[-1], fp[used] / fp[-1]
        precision = tp[used] / (tp[used] + fp[used])
        keep = _even_along_curve(fpr, tpr, max_points)
        keep_pr = _even_along_curve(tpr, precision, max_points)
        return {
            "roc": {
                "fpr": np.concatenate([[0.0], fpr[keep]]),
                "tpr": np.concatenate([[0.0], tpr[keep]]),
                "thresholds": np.concatenate([[np.inf], thresholds[keep]]),
            },
            "pr": {
                "recall": tpr[keep_pr],
                "precision": precision[keep_pr],
                "thresholds": thresholds[keep_pr],
            },
        }


def _even_along_curve(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points spread evenly by arc length (ends kept)."""
    if x.size <= max_points:
        return np.arange(x.size)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    targets = np.linspace(0.0, arc[-1], max_points)
    idx = np.searchsorted(arc, targets).clip(0, x.size - 1)
    return np.unique(np.concatenate([[0], idx, [x.size - 1]]))
