"""Validation during training: pixel AUROC / AP / FPR95, image AUROC and threshold calibration.

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

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.folder import FolderDataset
from flowclas_ros.data.oe_dataset import OETrainDataset
from flowclas_ros.data.outlier_exposure import OEConfig
from flowclas_ros.data.transforms import to_model_input
from flowclas_ros.evaluation.metrics import ImageMetrics, PixelMetrics
from flowclas_ros.model.flowclas.anomaly_map import image_score, likelihood_score, nll_score, upsample_crop
from flowclas_ros.model.flowclas.torch_model import FlowCLAS
from flowclas_ros.training.batches import images_to_features
from flowclas_ros.training.distributed import DistContext, all_gather_rows, all_reduce_minmax, all_reduce_sum_

ValMode = Literal["masks", "oe"]


@dataclass
class ValResult:
    """Validation outcome (all processes get the same numbers).

    Attributes:
        metrics: ``ap``, ``auroc``, ``fpr95``, ``image_auroc``, counts, ``score_range``, ...
        threshold: Pixel threshold at the target inlier FPR (None without inlier pixels).
    """

    metrics: dict[str, Any]
    threshold: float | None


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


def native_resolution(model: FlowCLAS) -> bool:
    """True when ``model.preprocess.resize`` is false (no resize; older configs always resize)."""
    return not bool(getattr(model.cfg.preprocess, "resize", True))


def cell_scores(model: FlowCLAS, feats: torch.Tensor) -> torch.Tensor:
    """Per-cell anomaly scores (B, h, w), the part of ``FlowCLAS.score_features`` before upsampling."""
    z, _ = model.flow_forward(feats)
    log_prob = model.log_prob_map(z)
    return likelihood_score(log_prob) if model.cfg.score.kind == "likelihood" else nll_score(log_prob)


def cells_to_pixels(model: FlowCLAS, cells: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Upsamples, crops and blurs cell scores exactly as ``FlowCLAS.score_features`` does."""
    padded_hw = (cells.shape[-2] * model.patch_size, cells.shape[-1] * model.patch_size)
    return model.blur(upsample_crop(cells, padded_hw, image_hw))


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
        model: FlowCLAS,
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
        self._cache: list[tuple[torch.Tensor, np.ndarray]] | None = None

    def _load(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        if self.mode == "oe":
            item = self.source[index]
            return item["mixed"], item["mask"].numpy()
        if self.native:  # full resolution: normalise at the image's own size
            data = self.source.data
            image = data.load_image(index)
            mask = data.load_mask(index, image.shape[:2])
            pre = dataclasses.replace(self.preprocess, input_size=tuple(image.shape[:2]))
            return to_model_input([image], pre)[0], mask
        image, mask = self.source.load_inlier(index)
        return to_model_input([image], self.preprocess)[0], mask

    def batches(self, model: FlowCLAS, device: torch.device, batch_size: int, amp_dtype: torch.dtype | None):
        """Yields (features (B, C, h, w) on ``device``, masks uint8 (B, H, W) numpy)."""
        if self._cache is not None:
            for feats, masks in self._cache:
                yield feats.to(device), masks
            return
        cache = []
        for start in range(0, len(self.indices), batch_size):
            loaded = [self._load(i) for i in self.indices[start : start + batch_size]]
            for group in _same_size_runs(loaded):
                feats, masks = self._features(model, group, device, amp_dtype)
                if self.cache_features:
                    cache.append((feats.cpu(), masks))
                yield feats, masks
        if self.cache_features:
            self._cache = cache

    @staticmethod
    def _features(model: FlowCLAS, loaded, device: torch.device, amp_dtype: torch.dtype | None):
        """(features, masks) of a list of same-size (image, mask) pairs."""
        images = torch.stack([image for image, _ in loaded])
        masks = np.stack([mask for _, mask in loaded])
        return images_to_features(model, images, device, amp_dtype), masks


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
    model: FlowCLAS,
    valset: ValidationSet,
    ctx: DistContext,
    target_fpr: float,
    batch_size: int = 8,
    amp_dtype: torch.dtype | None = None,
) -> ValResult:
    """Scores the val set and computes metrics and the calibrated threshold on every process."""
    was_training = model.training
    model.eval()
    cells, all_masks = [], []
    for feats, masks in valset.batches(model, ctx.device, batch_size, amp_dtype):
        cells.append(cell_scores(model, feats).float().cpu())
        all_masks.append(masks)
    low = min((float(c.min()) for c in cells), default=float("inf"))
    high = max((float(c.max()) for c in cells), default=float("-inf"))
    low, high = all_reduce_minmax(low, high, ctx)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise FloatingPointError(f"validation scores are not finite (range {low}..{high}); training diverged")
    span = max(high - low, 1e-6)
    pixel = PixelMetrics(score_range=(low - 1e-3 * span, high + 1e-3 * span))
    image = ImageMetrics()
    kind = model.cfg.score.image_score
    for cell, masks in zip(cells, all_masks):
        maps = cells_to_pixels(model, cell, tuple(masks.shape[-2:]))
        pixel.update(maps.numpy(), masks)
        for score, mask in zip(image_score(maps, kind).tolist(), masks):
            image.add(score, mask=mask)
    all_reduce_sum_(pixel.state, ctx)
    metrics = pixel.compute()
    metrics.update(_image_auroc(image, ctx))
    metrics["n_images"] = valset.n_total
    metrics["mode"] = valset.mode
    threshold = pixel.threshold_at_fpr(target_fpr) if metrics["n_neg"] > 0 else None
    if threshold is not None:
        metrics["at_threshold"] = pixel.at_threshold(threshold)
    model.train(was_training)
    return ValResult(metrics=metrics, threshold=threshold)


def _image_auroc(image: ImageMetrics, ctx: DistContext) -> dict[str, Any]:
    """Exact image AUROC over all processes."""
    if not ctx.enabled:
        return image.compute()
    rows = np.stack([image.scores, image.labels.astype(np.float64)], axis=1).reshape(-1, 2)
    merged = ImageMetrics()
    gathered = all_gather_rows(rows, ctx)
    merged.update(gathered[:, 0], gathered[:, 1] > 0.5)
    return merged.compute()
