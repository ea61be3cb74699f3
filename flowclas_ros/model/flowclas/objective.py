"""The FlowCLAS training objective ``L = alpha * NLL + L_con`` on one feature batch.

Wrapped in an ``nn.Module`` so that ``DistributedDataParallel`` can wrap it:
everything that touches trainable parameters (flow, base, projection head)
happens inside ``forward``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from flowclas_ros.model.features import IGNORE, FeatureBatch, TrainingObjective, autocast_context
from flowclas_ros.model.flowclas.loss import nll_from_log_prob, seg_loss, supcon_loss
from flowclas_ros.model.flowclas.seg_head import SegHead
from flowclas_ros.model.flowclas.train_config import LossConfig, SegConfig

if TYPE_CHECKING:  # the objective is built by FlowCLAS.objective, which imports this module
    from flowclas_ros.model.flowclas.torch_model import FlowCLAS


def sample_cells(selected: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of at most ``limit`` True entries of a flat bool tensor, drawn without replacement."""
    idx = torch.nonzero(selected.cpu(), as_tuple=False)[:, 0]
    if idx.numel() > limit:
        idx = idx[torch.randperm(idx.numel(), generator=generator)[:limit]]
    return idx.to(selected.device)


def balanced_count(mixed_mask: torch.Tensor, outlier_mask: torch.Tensor, max_views: int) -> int:
    """The official N = min(max_views, #pasted, #inlier, #outlier-image object, #outlier-image background).

    The background term is left out when the outlier images have no
    non-ignored background (ALLO's ignored COCO background), as in the
    official ``MixOODContrastLoss.get_anchor_con_samples``.
    """
    counts = [
        max_views,
        int((mixed_mask == 1).sum()),
        int((mixed_mask == 0).sum()),
        int((outlier_mask == 1).sum()),
    ]
    background = int((outlier_mask == 0).sum())
    if background > 0:
        counts.append(background)
    return min(counts)


class FlowCLASObjective(TrainingObjective):
    """Computes the loss of one :class:`FeatureBatch`.

    * NLL (``model/flowclas/loss.py:cell_nll``, reduced by ``nll_from_log_prob``) over the
      inlier cells (mask 0) of the mixed images only.
    * SupCon (``supcon_loss``) on ``model.project(z)``: anchors are up to
      ``anchors_outlier`` pasted-outlier cells and ``anchors_inlier`` inlier
      cells of the mixed images (over the whole batch); the contrast set is the
      anchors plus up to ``contrast_outlier`` object cells and
      ``contrast_inlier`` non-object cells of the standalone outlier images.
      Ignored cells (255) are never used. With ``sampling: balanced`` all four
      sets hold the same N cells (:func:`balanced_count`).
    * With ``seg`` enabled: a :class:`SegHead` on z of the mixed images,
      ``ce_weight * CE + lovasz_weight * Lovasz`` against ``batch.semantic``.

    Args:
        model: The FlowCLAS model (its backbone is not used here).
        cfg: Loss settings.
        amp_dtype: Autocast dtype for the flow on CUDA (losses stay fp32), or None.
        seg: Segmentation head settings (None or disabled: no head).
    """

    def __init__(
        self,
        model: FlowCLAS,
        cfg: LossConfig,
        amp_dtype: torch.dtype | None = None,
        seg: SegConfig | None = None,
    ):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.amp_dtype = amp_dtype
        self.seg = seg if seg is not None and seg.enabled else None
        self.seg_head = None
        if self.seg is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(model.cfg.seed + 1)
                self.seg_head = SegHead(model.feature_dim, self.seg.num_classes)
            self.seg_head.to(next(model.parameters()).device)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Training-only trainable modules by name (saved in the training state, not the checkpoint)."""
        return {"seg_head": self.seg_head} if self.seg_head is not None else {}

    def forward(
        self, batch: FeatureBatch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the scalar loss and detached parts (``nll``, ``con``, anchor counts)."""
        model, cfg = self.model, self.cfg
        n = batch.size
        with autocast_context(batch.mixed.device, self.amp_dtype):
            z, log_jac_det = model.flow_forward(torch.cat([batch.mixed, batch.outlier]))
            emb = model.project(z)
        z, log_jac_det, emb = z.float(), log_jac_det.float(), emb.float()
        # Every base distribution (ours, the authors' mu / log_scale) gives its element-wise log-density.
        log_prob = model.base.log_prob(z[:n])
        nll = nll_from_log_prob(log_prob, log_jac_det[:n], batch.mixed_mask == 0, cfg.nll_reduction)
        flat = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
        cells = z.shape[-2] * z.shape[-1]
        mixed_emb, outlier_emb = flat[: n * cells], flat[n * cells :]
        mixed_mask, outlier_mask = batch.mixed_mask.reshape(-1), batch.outlier_mask.reshape(-1)
        if cfg.sampling == "balanced":
            n_each = balanced_count(mixed_mask, outlier_mask, cfg.max_views)
            limits = (n_each,) * 4
        else:
            limits = (cfg.anchors_outlier, cfg.anchors_inlier, cfg.contrast_outlier, cfg.contrast_inlier)
        a_out = sample_cells(mixed_mask == 1, limits[0], generator)
        a_in = sample_cells(mixed_mask == 0, limits[1], generator)
        c_out = sample_cells(outlier_mask == 1, limits[2], generator)
        c_in = sample_cells(outlier_mask == 0, limits[3], generator)
        anchors = torch.cat([mixed_emb[a_out], mixed_emb[a_in]])
        anchor_labels = torch.cat([torch.ones_like(a_out), torch.zeros_like(a_in)])
        contrast = torch.cat([anchors, outlier_emb[c_out], outlier_emb[c_in]])
        contrast_labels = torch.cat([anchor_labels, torch.ones_like(c_out), torch.zeros_like(c_in)])
        if anchors.shape[0] == 0:
            con = flat.sum() * 0.0  # keeps every parameter in the graph (DDP needs that)
        else:
            con = supcon_loss(
                anchors,
                anchor_labels,
                contrast,
                contrast_labels,
                cfg.temperature,
                anchors_lead_contrast=True,
                all_anchors=cfg.anchor_mean == "all",
            )
        loss = cfg.alpha * nll + con
        parts = {
            "nll": nll.detach(),
            "con": con.detach(),
            "anchors_outlier": torch.tensor(float(a_out.numel())),
            "anchors_inlier": torch.tensor(float(a_in.numel())),
        }
        if self.seg_head is not None:
            if batch.semantic is None:
                raise ValueError("seg.enabled needs semantic labels in the batch (data.layout: cityscapes)")
            with autocast_context(batch.mixed.device, self.amp_dtype):
                logits = self.seg_head(z[:n])
            seg, seg_parts = seg_loss(
                logits.float(), batch.semantic, self.seg.ce_weight, self.seg.lovasz_weight, IGNORE
            )
            loss = loss + seg
            parts.update(seg_parts)
        return loss, parts
