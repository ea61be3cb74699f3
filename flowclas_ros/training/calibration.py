"""Calibration on the validation split: the image-level threshold and the VL4AD fusion statistics.

* **Image threshold** (``image_target_fpr``): ``is_anomalous`` compares the image score
  (max of the map by default) with its own threshold, chosen so that at most that fraction
  of the *normal* validation images (no anomalous pixel) is flagged. The pixel threshold
  (``target_fpr``, a share of inlier pixels) would flag far more normal images: one
  pixel above it is enough.
* **Fusion** (``model.fusion.mode`` != off): ``calibrate_fusion`` fits the flow and text
  score normalisation on the inlier pixels, and the thresholds are then calibrated on
  the fused score, i.e. on what the deployed model outputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowclas_ros.model.method import AnomalyMethod
from flowclas_ros.model.vl4ad.fusion import calibrate_fusion, fuse
from flowclas_ros.runtime.decision import place_threshold, threshold_margin
from flowclas_ros.training.distributed import DistContext, all_gather_rows

FUSION_SAMPLES_PER_PROCESS = 200_000
"""Inlier pixels per process used to fit the fusion statistics (uniform subsample)."""


def image_threshold_at_fpr(normal_scores: np.ndarray, target_fpr: float) -> float | None:
    """The image threshold that flags at most ``target_fpr`` of the normal images, with a margin.

    With ``n`` normal images at most ``floor(target_fpr * n)`` of them score at or above
    the result (:func:`~flowclas_ros.runtime.decision.at_or_above`); with fewer than
    ``1 / target_fpr`` images that is none. The threshold lies between the highest score
    that must stay below it and the next distinct higher score, a margin away from both
    where the gap allows, midway otherwise, and is a float32 value
    (:func:`~flowclas_ros.runtime.decision.place_threshold`), so a normal image is not
    flagged by one backend and passed by another over the last bit of a float. Exact (no
    binning). None without images.
    """
    scores = np.sort(np.asarray(normal_scores, np.float64).ravel())[::-1]
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return None
    allowed = int(math.floor(target_fpr * scores.size + 1e-9))
    boundary = scores[allowed]  # it and every lower score stay below the threshold
    higher = scores[:allowed][scores[:allowed] > boundary]  # ties with the boundary stay below too
    above = float(higher.min()) if higher.size else None
    return place_threshold(float(boundary), above, threshold_margin(scores))


def calibrate_and_fuse(
    model: AnomalyMethod,
    flow_maps: list[torch.Tensor],
    text_maps: list[torch.Tensor],
    masks: list[np.ndarray],
    ctx: DistContext,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Fits ``model.cfg.fusion``'s statistics on inlier pixels (all processes) and fuses the maps.

    Args:
        model: Its ``cfg.fusion`` is replaced by the calibrated one (saved with the checkpoint).
        flow_maps: Flow score maps (B, H, W) per batch.
        text_maps: Text score maps of the same batches.
        masks: Label masks (B, H, W) per batch: 0 = inlier.
        ctx: Distributed context (the samples of every process are pooled).
        seed: Subsampling seed.

    Returns:
        The fused maps per batch.
    """
    flow = torch.cat([m.reshape(-1) for m in flow_maps]).float()
    text = torch.cat([m.reshape(-1) for m in text_maps]).float()
    inlier = torch.from_numpy(np.concatenate([np.asarray(m).reshape(-1) for m in masks]) == 0)
    rows = torch.stack([flow[inlier], text[inlier]], dim=1).numpy().astype(np.float64)
    if rows.shape[0] > FUSION_SAMPLES_PER_PROCESS:
        pick = np.random.default_rng(seed + ctx.rank).choice(rows.shape[0], FUSION_SAMPLES_PER_PROCESS, False)
        rows = rows[pick]
    pooled = all_gather_rows(rows, ctx)
    if pooled.shape[0] == 0:
        raise ValueError("fusion calibration needs inlier (label 0) validation pixels; there are none")
    model.cfg.fusion = calibrate_fusion(model.cfg.fusion, pooled[:, 0], pooled[:, 1])
    return [fuse(f, t.to(f.dtype), model.cfg.fusion) for f, t in zip(flow_maps, text_maps)]
