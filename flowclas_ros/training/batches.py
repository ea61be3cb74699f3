"""Training batches as backbone features: computed live from OE images, or drawn from a cached pool.

Both sources yield :class:`FeatureBatch` objects for step ``start_step`` onwards
in the same deterministic order (epoch ``e`` shuffles with ``seed + e`` via
``DistributedSampler``; sample ``i`` of epoch ``e`` uses the OE random stream
``(seed, e, i)``), so a resumed run sees exactly the batches an uninterrupted
run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from flowclas_ros.data.outliers.dataset import OETrainDataset
from flowclas_ros.model.features import IGNORE, FeatureBatch, autocast_context
from flowclas_ros.model.method import AnomalyMethod
from flowclas_ros.training.distributed import DistContext


def masks_to_cells(
    masks: torch.Tensor, grid_hw: tuple[int, int], pad_multiple: int, symmetric: bool = False
) -> torch.Tensor:
    """Pixel masks (B, H, W) uint8 to feature cells (B, h, w) by nearest-neighbour (cell centres).

    The masks are first padded with 255 like ``AnomalyMethod.pad_input`` pads the
    image (bottom / right, or split evenly when ``symmetric``), so padding
    cells are ignored.
    """
    height, width = masks.shape[-2:]
    pad_h, pad_w = (-height) % pad_multiple, (-width) % pad_multiple
    pads = (0, pad_w, 0, pad_h)
    if symmetric:
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    padded = F.pad(masks.float().unsqueeze(1), pads, value=float(IGNORE))
    return F.interpolate(padded, size=grid_hw, mode="nearest-exact")[:, 0].to(torch.uint8)


def images_to_features(
    model: AnomalyMethod, images: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None
) -> torch.Tensor:
    """Backbone features (fp32) of a normalised batch, without autograd."""
    padded, _ = model.pad_input(images.to(device, non_blocking=True))
    with autocast_context(device, amp_dtype):
        return model.extract_features(padded).float()


def features_of_items(
    model: AnomalyMethod, items: dict[str, torch.Tensor], device: torch.device, amp_dtype: torch.dtype | None
) -> FeatureBatch:
    """Runs the backbone once over the mixed and the outlier images of a collated OE batch."""
    batch = items["mixed"].shape[0]
    feats = images_to_features(model, torch.cat([items["mixed"], items["outlier"]]), device, amp_dtype)
    grid = (feats.shape[-2], feats.shape[-1])
    symmetric = model.cfg.preprocess.padding == "symmetric"
    masks = torch.cat([items["mask"], items["outlier_mask"]])
    masks = masks_to_cells(masks, grid, model.pad_multiple, symmetric)
    masks = masks.to(device)
    semantic = items["semantic"].to(device) if "semantic" in items else None
    return FeatureBatch(feats[:batch], feats[batch:], masks[:batch], masks[batch:], semantic)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way (after ``skip`` samples of this rank)."""

    def __init__(self, dataset, ctx: DistContext, seed: int):
        super().__init__(
            dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class LiveBatches:
    """OE images built by DataLoader workers, features by the frozen backbone every step."""

    def __init__(
        self,
        dataset: OETrainDataset,
        model: AnomalyMethod,
        ctx: DistContext,
        batch_size: int,
        seed: int,
        num_workers: int,
        amp_dtype: torch.dtype | None,
    ):
        self.dataset, self.model, self.ctx = dataset, model, ctx
        self.batch_size, self.num_workers, self.amp_dtype = batch_size, num_workers, amp_dtype
        self.sampler = ResumableSampler(dataset, ctx, seed)
        self.steps_per_epoch = self.sampler.num_samples // batch_size

    def epoch(self, epoch: int, skip_steps: int) -> Iterator[FeatureBatch]:
        """Batches of ``epoch`` from batch ``skip_steps`` on."""
        self.sampler.set_epoch(epoch)
        self.sampler.skip = skip_steps * self.batch_size
        self.dataset.set_epoch(epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            drop_last=True,
            pin_memory=self.ctx.device.type == "cuda",
            persistent_workers=False,
        )
        for items in loader:
            yield features_of_items(self.model, items, self.ctx.device, self.amp_dtype)


class PoolBatches:
    """A fixed pool of ``pool_size`` OE variants per training image, features cached in memory.

    Variant ``k`` of image ``i`` is the sample the live source would produce
    for image ``i`` in epoch ``k``; epoch ``e`` uses variant ``e % pool_size``.
    Every process builds the full pool (simple; meant for small datasets).
    """

    def __init__(
        self,
        dataset: OETrainDataset,
        model: AnomalyMethod,
        ctx: DistContext,
        batch_size: int,
        seed: int,
        pool_size: int,
        dtype: torch.dtype,
        amp_dtype: torch.dtype | None,
        num_workers: int = 0,
        progress: bool = True,
    ):
        self.ctx, self.batch_size, self.pool_size = ctx, batch_size, pool_size
        self.sampler = ResumableSampler(dataset, ctx, seed)
        self.steps_per_epoch = self.sampler.num_samples // batch_size
        n = len(dataset)
        mixed, outlier, mixed_mask, outlier_mask = [], [], [], []
        bar = tqdm(total=n * pool_size, desc="caching OE features", unit="img", disable=not progress)
        for variant in range(pool_size):
            dataset.set_epoch(variant)
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
            for items in loader:
                fb = features_of_items(model, items, ctx.device, amp_dtype)
                mixed.append(fb.mixed.to("cpu", dtype))
                outlier.append(fb.outlier.to("cpu", dtype))
                mixed_mask.append(fb.mixed_mask.cpu())
                outlier_mask.append(fb.outlier_mask.cpu())
                bar.update(fb.size)
        bar.close()
        # Row variant * n + i holds variant `variant` of image i.
        self.mixed, self.outlier = torch.cat(mixed), torch.cat(outlier)
        self.mixed_mask, self.outlier_mask = torch.cat(mixed_mask), torch.cat(outlier_mask)
        self.n_images = n

    @property
    def nbytes(self) -> int:
        """Memory held by the cached features."""
        return sum(t.numel() * t.element_size() for t in (self.mixed, self.outlier))

    def epoch(self, epoch: int, skip_steps: int) -> Iterator[FeatureBatch]:
        """Batches of ``epoch`` from batch ``skip_steps`` on."""
        self.sampler.set_epoch(epoch)
        self.sampler.skip = skip_steps * self.batch_size
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        rows = order + (epoch % self.pool_size) * self.n_images
        device = self.ctx.device
        for start in range(0, len(rows) - self.batch_size + 1, self.batch_size):
            pick = rows[start : start + self.batch_size]
            yield FeatureBatch(
                self.mixed[pick].to(device).float(),
                self.outlier[pick].to(device).float(),
                self.mixed_mask[pick].to(device),
                self.outlier_mask[pick].to(device),
            )
