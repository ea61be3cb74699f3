from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from flowclas_ros.model.flowclas.loss import nll_loss, supcon_loss


def _base():
    mean = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    log_sigma = torch.tensor([0.0, 0.4, -0.2], dtype=torch.float64)
    return mean, log_sigma


def _naive_cell_nll(z, mean, log_sigma, log_det, b, i, j):
    cells = z.shape[-2] * z.shape[-1]
    total = 0.0
    for c in range(z.shape[1]):
        sigma = math.exp(log_sigma[c])
        u = (float(z[b, c, i, j]) - float(mean[c])) / sigma
        total += 0.5 * u * u + math.log(sigma) + 0.5 * math.log(2 * math.pi)
    return total - float(log_det[b]) / cells


def test_nll_loss_matches_hand_computation_on_inlier_cells():
    torch.manual_seed(0)
    mean, log_sigma = _base()
    z = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    log_det = torch.tensor([1.5, -2.0], dtype=torch.float64)
    mask = torch.tensor([[[1, 0, 1], [1, 1, 0]], [[0, 0, 0], [1, 0, 0]]], dtype=torch.bool)
    expected = sum(
        _naive_cell_nll(z, mean, log_sigma, log_det, b, i, j)
        for b in range(2)
        for i in range(2)
        for j in range(3)
        if mask[b, i, j]
    )
    got = nll_loss(z, log_det, mask, mean, log_sigma)
    assert math.isclose(float(got), expected / 2, rel_tol=1e-12)
    got_mean = nll_loss(z, log_det, mask, mean, log_sigma, reduction="mean")
    assert math.isclose(float(got_mean), expected / (int(mask.sum()) * 3), rel_tol=1e-12)


def test_nll_loss_full_mask_is_exact_image_nll_and_ignores_masked_cells():
    mean, log_sigma = _base()
    z = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    log_det = torch.tensor([0.7], dtype=torch.float64)
    normal = torch.distributions.Normal(mean.view(1, 3, 1, 1), log_sigma.exp().view(1, 3, 1, 1))
    image_nll = -normal.log_prob(z).sum() - log_det[0]
    full = nll_loss(z, log_det, torch.ones(1, 4, 4), mean, log_sigma)
    torch.testing.assert_close(full, image_nll)
    mask = torch.zeros(1, 4, 4)
    mask[0, 1, 2] = 1
    nll_loss(z, log_det, mask, mean, log_sigma).backward()
    grad_cells = z.grad.abs().sum(dim=1)[0] > 0
    assert grad_cells.sum() == 1 and grad_cells[1, 2]


def _naive_supcon(a, al, c, cl, temperature, exclude_diagonal=False):
    losses = []
    for i in range(a.shape[0]):
        terms = []
        negatives = [j for j in range(c.shape[0]) if cl[j] != al[i]]
        neg = sum(math.exp(float(a[i] @ c[n]) / temperature) for n in negatives)
        for p in range(c.shape[0]):
            if cl[p] != al[i] or (exclude_diagonal and p == i):
                continue
            pos = math.exp(float(a[i] @ c[p]) / temperature)
            terms.append(-math.log(pos / (pos + neg)))
        if terms:
            losses.append(sum(terms) / len(terms))
    return sum(losses) / len(losses)


def test_supcon_matches_naive_loops():
    torch.manual_seed(1)
    a = F.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1)
    c = F.normalize(torch.randn(9, 5, dtype=torch.float64), dim=1)
    al = torch.tensor([0, 1, 0, 1, 1, 0])
    cl = torch.tensor([1, 1, 0, 0, 1, 0, 1, 0, 0])
    got = supcon_loss(a, al, c, cl, temperature=0.2)
    assert math.isclose(float(got), _naive_supcon(a, al, c, cl, 0.2), rel_tol=1e-10)


def test_supcon_excludes_self_pairs_when_anchors_lead_contrast():
    torch.manual_seed(2)
    a = F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1)
    extra = F.normalize(torch.randn(3, 3, dtype=torch.float64), dim=1)
    al = torch.tensor([0, 1, 1, 0])
    cl = torch.cat([al, torch.tensor([0, 1, 1])])
    c = torch.cat([a, extra])
    got = supcon_loss(a, al, c, cl, 0.1, anchors_lead_contrast=True)
    expected = _naive_supcon(a, al, c, cl, 0.1, exclude_diagonal=True)
    assert math.isclose(float(got), expected, rel_tol=1e-10)


def test_supcon_separated_clusters_closed_form_and_ordering():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    emb = torch.stack([e0, e0, e1, e1])
    labels = torch.tensor([0, 0, 1, 1])
    t = 0.1
    got = supcon_loss(emb, labels, emb, labels, t)
    # every anchor: 2 positives at logit 1/T, 2 negatives at 0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2.0))
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    swapped = supcon_loss(emb, labels, emb, torch.tensor([0, 1, 0, 1]), t)
    assert swapped > got + 5.0


def test_supcon_without_positives_is_zero_and_differentiable():
    a = F.normalize(torch.randn(3, 4), dim=1).requires_grad_(True)
    c = F.normalize(torch.randn(2, 4), dim=1)
    loss = supcon_loss(a, torch.zeros(3), c, torch.ones(2))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert a.grad is not None
