"""Validation during training: pixel AUROC / AP / FPR95, image AUROC and threshold calibration.

Two thresholds are calibrated: the pixel one at ``target_fpr`` of the inlier pixels and
the image one at ``image_target_fpr`` of the normal images (:mod:`.calibration`). With
VL4AD fusion on, the fusion statistics are fitted first and everything is measured on
the fused score (then the maps are kept in memory instead of binning cells).

Metrics come from :mod:`flowclas_ros.evaluation.metrics` (the code
``flowclas-eval`` uses). Scores and masks are compared at the model input
size (masks resized by nearest neighbour), or at each image's native size
when ``model.preprocess.resize`` is false (the official full-resolution
evaluation; images of one size are batched together). Each process scores its share of
the val images; the metric histograms are summed over processes.

Binning needs one score range on every process. Per-pixel scores are
bilinear upsamplings (plus an optional normalised blur) of per-cell scores,
i.e. convex combinations of them, so the global min / max over cells bounds
every pixel score: pass 1 scores cells and reduces min / max, pass 2
upsamples and bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.data.images.transforms import to_model_input
from flowclas_ros.data.outliers.dataset import OETrainDataset
from flowclas_ros.data.outliers.exposure import OEConfig
from flowclas_ros.evaluation.metrics import ImageMetrics, PixelMetrics
from flowclas_ros.model.flowclas.anomaly_map import image_score
from flowclas_ros.model.method import AnomalyMethod
from flowclas_ros.model.vl4ad.fusion import fuse
from flowclas_ros.runtime.decision import at_or_above, float32_at_or_above
from flowclas_ros.training.batches import images_to_features
from flowclas_ros.training.calibration import calibrate_and_fuse, image_threshold_at_fpr
from flowclas_ros.training.distributed import DistContext, all_gather_rows, all_reduce_minmax, all_reduce_sum_

ValMode = Literal["masks", "oe"]


@dataclass
class ValResult:
    """Validation outcome (all processes get the same numbers).

    Attributes:
        metrics: ``ap``, ``auroc``, ``fpr95``, ``image_auroc``, counts, ``score_range``, ...
        threshold: Pixel threshold at the target inlier FPR (None without inlier pixels).
        image_threshold: Image threshold at the target normal-image FPR (None without normal images).
    """

    metrics: dict[str, Any]
    threshold: float | None
    image_threshold: float | None = None


def choose_val_mode(data: FolderDataset, requested: str) -> ValMode:
    """Resolves ``data.val_anomalies``: ``auto`` uses masks if all exist and some mark anomalies."""
    if requested in ("masks", "oe"):
        return requested  # type: ignore[return-value]
    if not data.has_masks:
        return "oe"
    for index in range(len(data)):
        mask = data.load_mask(index)
        if mask is not None and (mask == 1).any():
            return "masks"
    return "oe"


def native_resolution(model: AnomalyMethod) -> bool:
    """True when ``model.preprocess.resize`` is false (no resize: the official full-resolution evaluation)."""
    return not model.cfg.preprocess.resize


class ValidationSet:
    """This process's share of the validation images, with masks at model input size.

    Args:
        data: Val images (masks needed for ``mode == "masks"``).
        mode: ``masks`` (real anomalies) or ``oe`` (OE objects pasted with a fixed seed).
        oe: OE settings (``oe`` mode).
        model: Supplies the preprocessing.
        ctx: Distributed context (images ``rank::world_size``).
        seed: Seed of the fixed OE variants.
        max_images: Use at most this many images (0 = all).
        cache_features: Keep backbone features after the first pass.
    """

    def __init__(
        self,
        data: FolderDataset,
        mode: ValMode,
        oe: OEConfig,
        model: AnomalyMethod,
        ctx: DistContext,
        seed: int,
        max_images: int = 0,
        cache_features: bool = True,
    ):
        self.mode = mode
        self.preprocess = model.cfg.preprocess
        self.native = native_resolution(model)
        if self.native and mode == "oe":
            raise ConfigError(
                "data.val_anomalies: native-resolution validation (model.preprocess.resize: false) "
                "needs val masks; set data.val to a folder with masks/ and val_anomalies: masks"
            )
        count = len(data) if max_images <= 0 else min(max_images, len(data))
        self.indices = list(range(count))[ctx.rank :: ctx.world_size]
        self.n_total = count
        self.source = OETrainDataset(data, oe, self.preprocess, seed=seed, hflip=False, vary_per_epoch=False)
        self.cache_features = cache_features
        self._cache: dict[bool, list[tuple[torch.Tensor, np.ndarray, torch.Tensor | None]]] = {}

    def _load(self, index: int, clean: bool = False) -> tuple[torch.Tensor, np.ndarray]:
        if self.mode == "oe" and not clean:
            item = self.source[index]
            return item["mixed"], item["mask"].numpy()
        if self.native:  # full resolution (preprocess.resize false: to_model_input keeps the size)
            image = self.source.data.load_image(index)
            mask = self.source.data.load_mask(index, image.shape[:2])
        else:
            image, mask = self.source.load_inlier(index)
        if mask is None:  # a clean image without a mask file: every pixel is an inlier
            mask = np.zeros(image.shape[:2], np.uint8)
        return torch.from_numpy(to_model_input([image], self.preprocess)[0]), mask

    def batches(
        self,
        model: AnomalyMethod,
        device: torch.device,
        batch_size: int,
        amp_dtype: torch.dtype | None,
        clean: bool = False,
    ):
        """Yields (features (B, C, h, w) on ``device``, masks uint8 (B, H, W), text maps or None).

        ``clean`` (OE mode): the images without pasted objects, the normal images of the image
        threshold. Text score maps (B, H, W) come with fusion on (the text scorer is frozen,
        so they are cached with the features).
        """
        if clean in self._cache:
            for feats, masks, text in self._cache[clean]:
                yield feats.to(device), masks, None if text is None else text.to(device)
            return
        cache = []
        for start in range(0, len(self.indices), batch_size):
            loaded = [self._load(i, clean) for i in self.indices[start : start + batch_size]]
            for group in _same_size_runs(loaded):
                feats, masks, text = self._features(model, group, device, amp_dtype)
                if self.cache_features:
                    cache.append((feats.cpu(), masks, None if text is None else text.cpu()))
                yield feats, masks, text
        if self.cache_features:
            self._cache[clean] = cache

    @staticmethod
    def _features(model: AnomalyMethod, loaded, device: torch.device, amp_dtype: torch.dtype | None):
        """(features, masks, text maps or None) of a list of same-size (image, mask) pairs.

        The text maps (VL4AD fusion on) are the frozen text scorer's: cached with the features.
        """
        images = torch.stack([image for image, _ in loaded])
        masks = np.stack([mask for _, mask in loaded])
        text = model.text_score(images.to(device)).float() if model.fusion_enabled else None
        return images_to_features(model, images, device, amp_dtype), masks, text


def _same_size_runs(loaded: list) -> list[list]:
    """Splits (image, mask) pairs into consecutive runs of one image size (stackable batches)."""
    runs: list[list] = []
    for item in loaded:
        if runs and runs[-1][0][0].shape == item[0].shape:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


@torch.no_grad()
def validate(
    model: AnomalyMethod,
    valset: ValidationSet,
    ctx: DistContext,
    target_fpr: float,
    batch_size: int = 8,
    amp_dtype: torch.dtype | None = None,
    image_target_fpr: float = 0.01,
) -> ValResult:
    """Scores the val set and computes metrics and the calibrated thresholds on every process."""
    was_training = model.training
    model.eval()
    cells, all_masks, texts = [], [], []
    for feats, masks, text in valset.batches(model, ctx.device, batch_size, amp_dtype):
        cells.append(model.cell_scores(feats).float().cpu())
        all_masks.append(masks)
        texts.append(text)
    fused = None
    if model.fusion_enabled:  # the deployed score: calibrate the fusion, measure the fused maps
        flow_maps = [model.cells_to_pixels(c, tuple(m.shape[-2:])) for c, m in zip(cells, all_masks)]
        fused = calibrate_and_fuse(model, flow_maps, [t.cpu() for t in texts], all_masks, ctx)
    bounded = cells if fused is None else fused  # cells bound every upsampled pixel score
    low = min((float(c.min()) for c in bounded), default=float("inf"))
    high = max((float(c.max()) for c in bounded), default=float("-inf"))
    low, high = all_reduce_minmax(low, high, ctx)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise FloatingPointError(f"validation scores are not finite (range {low}..{high}); training diverged")
    span = max(high - low, 1e-6)
    pixel = PixelMetrics(score_range=(low - 1e-3 * span, high + 1e-3 * span))
    image = ImageMetrics()
    kind = model.cfg.score.image_score
    for index, (cell, masks) in enumerate(zip(cells, all_masks)):
        maps = model.cells_to_pixels(cell, tuple(masks.shape[-2:])) if fused is None else fused[index]
        pixel.update(maps.numpy(), masks)
        for score, mask in zip(image_score(maps, kind).tolist(), masks):
            image.add(score, mask=mask)
    all_reduce_sum_(pixel.state, ctx)
    metrics = pixel.compute()
    metrics.update(_image_auroc(image, ctx))
    metrics["n_images"] = valset.n_total
    metrics["mode"] = valset.mode
    threshold = None
    if metrics["n_neg"] > 0:  # a bin edge, stored as the float32 value that keeps every pixel's decision
        threshold = float32_at_or_above(pixel.threshold_at_fpr(target_fpr))
        metrics["at_threshold"] = pixel.at_threshold(threshold)
    normal = _normal_image_scores(model, valset, image, ctx, batch_size, amp_dtype)
    image_threshold = image_threshold_at_fpr(normal, image_target_fpr)
    if image_threshold is not None:
        flagged = int(np.count_nonzero(at_or_above(normal, image_threshold)))
        metrics["image_threshold"] = {
            "n_normal": int(normal.size),
            "target_fpr": image_target_fpr,
            "n_flagged": flagged,
        }
    model.train(was_training)
    return ValResult(metrics=metrics, threshold=threshold, image_threshold=image_threshold)


def _normal_image_scores(
    model: AnomalyMethod,
    valset: ValidationSet,
    scored: ImageMetrics,
    ctx: DistContext,
    batch_size: int,
    amp_dtype: torch.dtype | None,
) -> np.ndarray:
    """Image scores of the normal val images of every process.

    With masks: the scored images without an anomalous pixel. In OE mode every val image
    carries pasted objects, so the clean originals are scored (once more, cached).
    """
    if valset.mode == "masks":
        local = scored.scores[~scored.labels]
    else:
        parts = []
        for feats, masks, text in valset.batches(model, ctx.device, batch_size, amp_dtype, clean=True):
            maps = model.cells_to_pixels(model.cell_scores(feats).float().cpu(), tuple(masks.shape[-2:]))
            if text is not None:  # fusion statistics as calibrated on the main pass
                maps = fuse(maps, text.cpu().to(maps.dtype), model.cfg.fusion)
            parts.append(image_score(maps, model.cfg.score.image_score).numpy())
        local = np.concatenate(parts) if parts else np.empty(0)
    return all_gather_rows(np.asarray(local, np.float64).reshape(-1, 1), ctx).ravel()


def _image_auroc(image: ImageMetrics, ctx: DistContext) -> dict[str, Any]:
    """Exact image AUROC over all processes."""
    if not ctx.enabled:
        return image.compute()
    rows = np.stack([image.scores, image.labels.astype(np.float64)], axis=1).reshape(-1, 2)
    merged = ImageMetrics()
    gathered = all_gather_rows(rows, ctx)
    merged.update(gathered[:, 0], gathered[:, 1] > 0.5)
    return merged.compute()
