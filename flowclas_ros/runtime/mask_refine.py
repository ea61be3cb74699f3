"""The FlowCLAS authors' segment-mask refinement of a score map (numpy only, no torch).

Reimplements the rule of ``FlowCLAS.post_process_w_sam_masks`` (TRAILab/FlowCLAS,
``src/core/models/flowclas/flowclas_module.py`` at e451e6c) from its description;
the masks come from any segmenter (SAM2's automatic mask generator in
:mod:`flowclas_ros.runtime.sam2_refine`). For each mask, in the order given:

1. take the mask's current scores (earlier masks' replacements included: overlapping
   masks are applied one after the other, in place);
2. histogram them into ``num_bins`` (20) equal bins spanning their own min..max
   (``numpy.histogram`` semantics: half-open bins, the last one closed; the edges come from
   ``numpy.linspace`` of the float32 min and max, so they are float32 under numpy >= 2's
   promotion rules, as in the authors' pinned numpy 2.1.2);
3. the modal bin is the first bin with the largest count; its scores are those with
   ``lo <= s < hi`` (half-open even for the last bin, as in the authors' code, so the
   maximum itself is not in the last bin's mean);
4. if that set is empty (e.g. all scores equal) the mask is left alone; otherwise every
   pixel of the mask with ``s < lo`` or ``s > hi`` takes the set's mean (float32 mean,
   as numpy computes it on the float32 map). Scores equal to ``hi`` are kept.

The effect: inside one segment, outlying scores are pulled to the segment's dominant
level, which sharpens anomaly boundaries to object boundaries.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

NUM_BINS = 20
"""Histogram bins per mask, as in the authors' code."""


def refine_with_masks(
    score_map: np.ndarray, masks: Iterable[np.ndarray], num_bins: int = NUM_BINS
) -> np.ndarray:
    """Applies the modal-bin rule of each mask in turn; returns a new float32 map.

    Args:
        score_map: (H, W) float scores.
        masks: (H, W) boolean (or 0/1) masks, applied in this order (SAM2: its output order).
        num_bins: Bins of each mask's score histogram.

    Raises:
        ValueError: A mask of another shape than the map, or ``num_bins < 1``.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    out = np.array(score_map, dtype=np.float32, copy=True)
    if out.ndim != 2:
        raise ValueError(f"score map must be 2-D, got shape {out.shape}")
    for index, mask in enumerate(masks):
        mask = np.asarray(mask).astype(bool, copy=False)
        if mask.shape != out.shape:
            raise ValueError(f"mask {index}: shape {mask.shape} differs from the score map's {out.shape}")
        scores = out[mask]
        if scores.size == 0:
            continue
        counts, edges = np.histogram(scores, bins=np.linspace(scores.min(), scores.max(), num_bins + 1))
        mode = int(np.argmax(counts))
        low, high = edges[mode], edges[mode + 1]
        in_mode = scores[(scores >= low) & (scores < high)]
        if in_mode.size == 0:
            continue
        # Their replacement compares a torch float32 map with the edges, which torch casts to
        # float32 first; the modal set above was selected in numpy, with numpy's promotion.
        low32, high32 = np.float32(low), np.float32(high)
        out[mask & ((out < low32) | (out > high32))] = in_mode.mean()
    return out
