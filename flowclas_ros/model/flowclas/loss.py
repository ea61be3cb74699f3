"""FlowCLAS training losses: flow NLL on inlier cells and a supervised contrastive loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from flowclas_ros.model.flow import gaussian_log_prob


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
    return nll_from_log_prob(gaussian_log_prob(z, mean, log_sigma), log_jac_det, inlier_mask, reduction)


def supcon_loss(
    anchor_emb: torch.Tensor,
    anchor_labels: torch.Tensor,
    contrast_emb: torch.Tensor,
    contrast_labels: torch.Tensor,
    temperature: float = 0.1,
    *,
    anchors_lead_contrast: bool = False,
    all_anchors: bool = False,
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
        all_anchors: Average over every anchor, an anchor without positives
            counting 0 (the official ``_info_nce``), instead of over the anchors
            that have a positive.

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
    return per_anchor.mean() if all_anchors else per_anchor[valid].mean()


def lovasz_jaccard_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted in decreasing order.

    ``g_i = J(1..i) - J(1..i-1)`` with ``J(k) = 1 - |gt minus top_k| / |gt U top_k|``
    (Berman et al. 2018, Alg. 1), where ``top_k`` are the k largest errors.
    """
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Lovasz-softmax loss over a whole batch, as the official FlowCLAS ``LovaszLoss``.

    Softmax over classes; every non-ignored pixel of the batch in one set; for
    each class c present in ``target``: the Lovasz extension of the Jaccard
    loss at the errors ``|1[y = c] - p_c|``. Summed over present classes and
    divided by the number of classes C (absent classes count as 0). Written
    here because the library implementations (e.g. segmentation_models_pytorch)
    average over present classes only, which weights the loss differently.

    Args:
        logits: (B, C, H, W).
        target: (B, H, W) integer class ids, ``ignore_index`` ignored.
        ignore_index: Label that is left out.

    Returns:
        Scalar loss (0, still connected to the graph, when no pixel is labelled).
    """
    num_classes = logits.shape[1]
    probs = F.softmax(logits.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, num_classes)
    labels = target.reshape(-1).long()
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    total = logits.sum() * 0.0
    for c in torch.unique(labels).tolist():
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        total = total + torch.dot(errors_sorted, lovasz_jaccard_grad(fg[order]))
    return total / num_classes


def seg_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ce_weight: float = 0.5,
    lovasz_weight: float = 0.5,
    ignore_index: int = 255,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``ce_weight * CE + lovasz_weight * Lovasz`` on logits upsampled (bilinear) to the target size.

    Returns:
        The weighted loss and the detached parts (``ce``, ``lovasz``).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    labels = target.long()
    if bool((labels != ignore_index).any()):
        ce = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
    else:
        ce = logits.sum() * 0.0  # cross_entropy would give NaN with every pixel ignored
    lovasz = lovasz_softmax_loss(logits, labels, ignore_index)
    return ce_weight * ce + lovasz_weight * lovasz, {"ce": ce.detach(), "lovasz": lovasz.detach()}


def nll_from_log_prob(
    log_prob: torch.Tensor,
    log_jac_det: torch.Tensor,
    inlier_mask: torch.Tensor,
    reduction: Literal["sum", "mean"] = "sum",
) -> torch.Tensor:
    """:func:`nll_loss` from any base distribution's element-wise log-density.

    ``nll[b, i] = -sum_c log_prob[b, c, i] - log_jac_det[b] / (h * w)`` over the
    inlier cells, reduced as in :func:`nll_loss` (used for bases other than
    ``DiagonalGaussian``, e.g. the authors' ``mu`` / ``log_scale`` Gaussian).

    Args:
        log_prob: (B, C, h, w) ``log N(z_c)`` per element, constant included.
        log_jac_det: Per-image log|det J| of the flow (B,).
        inlier_mask: (B, h, w) bool / {0, 1}, True for cells used in the loss.
        reduction: ``sum`` or ``mean``, as in :func:`nll_loss`.
    """
    mask = inlier_mask.to(log_prob.dtype)
    total = (cell_nll(log_prob, log_jac_det) * mask).sum()
    if reduction == "sum":
        return total / log_prob.shape[0]
    if reduction == "mean":
        return total / (mask.sum() * log_prob.shape[1]).clamp(min=1.0)
    raise ValueError(f"nll: unknown reduction {reduction!r}")


def cell_nll(log_prob: torch.Tensor, log_jac_det: torch.Tensor) -> torch.Tensor:
    """Per-cell negative log-likelihood (B, h, w) in nats: the one definition of the package.

    ``nll[b, i] = -sum_c log_prob[b, c, i] - log_jac_det[b] / (h * w)``: the flow's per-image
    log-det is shared evenly by its cells (as in the official FlowCLAS code), so summing over
    the cells of an image gives its exact NLL.

    Args:
        log_prob: (B, C, h, w) element-wise base log-density, constant included.
        log_jac_det: Per-image log|det J| of the flow (B,).
    """
    cells = log_prob.shape[-2] * log_prob.shape[-1]
    return -log_prob.sum(dim=1) - (log_jac_det / cells).view(-1, 1, 1)
