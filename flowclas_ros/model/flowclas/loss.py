"""FlowCLAS training losses: flow NLL on inlier cells and a supervised contrastive loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from flowclas_ros.model.flow import HALF_LOG_2PI


def nll_loss(
    z: torch.Tensor,
    log_jac_det: torch.Tensor,
    inlier_mask: torch.Tensor,
    mean: torch.Tensor,
    log_sigma: torch.Tensor,
    reduction: Literal["sum", "mean"] = "sum",
) -> torch.Tensor:
    """Negative log-likelihood of the inlier feature cells under the flow.

    Per cell i of image b (h * w cells, C channels):

        nll[b, i] = sum_c [ 0.5 ((z[b,c,i] - mean_c) / sigma_c)^2 + log sigma_c + 0.5 log 2pi ]
                    - log_jac_det[b] / (h * w)

    i.e. the flow's per-image log-det is shared evenly by its cells (as in the
    official FlowCLAS code), so over a fully-inlier image the sum of
    ``nll[b, :]`` is that image's exact NLL. Only inlier cells count.

    Args:
        z: Flow output (B, C, h, w).
        log_jac_det: Per-image log|det J| of the flow (B,).
        inlier_mask: (B, h, w) bool / {0, 1}, True for cells used in the loss
            (normal pixels; not outliers, not ignored), at feature resolution.
        mean: Base-distribution mean (C,) (``model.base.mean``).
        log_sigma: Base-distribution log-sigma (C,) (``model.base.log_sigma``).
        reduction: ``sum``: sum over inlier cells, averaged over the batch
            (the official code's scale). ``mean``: divided by the number of
            inlier cells times C, i.e. nats per dimension (0 if no inliers).

    Returns:
        Scalar loss.
    """
    mask = inlier_mask.to(z.dtype)
    cells = z.shape[-2] * z.shape[-1]
    scaled = (z - mean.view(1, -1, 1, 1)) * torch.exp(-log_sigma.view(1, -1, 1, 1))
    per_cell = (0.5 * scaled**2 + log_sigma.view(1, -1, 1, 1) + HALF_LOG_2PI).sum(dim=1)
    per_cell = per_cell - (log_jac_det / cells).view(-1, 1, 1)
    total = (per_cell * mask).sum()
    if reduction == "sum":
        return total / z.shape[0]
    if reduction == "mean":
        return total / (mask.sum() * z.shape[1]).clamp(min=1.0)
    raise ValueError(f"nll_loss: unknown reduction {reduction!r}")


def supcon_loss(
    anchor_emb: torch.Tensor,
    anchor_labels: torch.Tensor,
    contrast_emb: torch.Tensor,
    contrast_labels: torch.Tensor,
    temperature: float = 0.1,
    *,
    anchors_lead_contrast: bool = False,
) -> torch.Tensor:
    """Supervised pixel contrastive (InfoNCE) loss with binary labels, as in FlowCLAS.

    With logits ``l_ij = a_i . c_j / T`` and, for anchor i, positives P(i)
    (contrast items with the same label) and negatives N(i) (other label):

        loss = mean_i  mean_{p in P(i)}  -log( exp(l_ip) / (exp(l_ip) + sum_{n in N(i)} exp(l_in)) )

    Each positive pair is contrasted with all negatives only (the official
    ``_info_nce`` form). Anchors without any positive are left out of the mean;
    with no usable anchor the loss is 0 (still connected to the graph).

    Args:
        anchor_emb: (N, D) L2-normalised anchor embeddings.
        anchor_labels: (N,) binary labels (e.g. 1 = outlier, 0 = inlier).
        contrast_emb: (M, D) L2-normalised contrast embeddings.
        contrast_labels: (M,) binary labels.
        temperature: Softmax temperature T.
        anchors_lead_contrast: Set when ``contrast_emb[:N]`` are the anchors
            themselves (same order), as when the anchor set is part of the
            contrast set; each anchor's pair with itself is then not a positive.

    Returns:
        Scalar loss.
    """
    logits = anchor_emb @ contrast_emb.T / temperature
    same = anchor_labels.view(-1, 1) == contrast_labels.view(1, -1)
    positive = same.clone()
    if anchors_lead_contrast:
        idx = torch.arange(anchor_emb.shape[0], device=logits.device)
        positive[idx, idx] = False
    # log(sum_n exp(l_in)) over negatives only; a finite fill keeps gradients NaN-free without negatives
    fill = torch.finfo(logits.dtype).min
    log_neg = torch.logsumexp(torch.where(same, torch.full_like(logits, fill), logits), dim=1, keepdim=True)
    log_prob = -F.softplus(log_neg - logits)  # = log(e^l / (e^l + sum_n e^l_n)), accurate near 0
    pos_count = positive.sum(dim=1)
    per_anchor = -(log_prob * positive).sum(dim=1) / pos_count.clamp(min=1)
    valid = pos_count > 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return per_anchor[valid].mean()
