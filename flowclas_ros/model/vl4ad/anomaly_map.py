"""VL4AD's scoring math, embeddings in and scores out (no encoders, so it is checked on built embeddings).

Class logits are the max over a class's prompts of the patch-prompt cosine over a
temperature (max-logit prompt ensembling); the pixel score is ``1 - max`` over the ID
classes of their softmax. :class:`~flowclas_ros.model.vl4ad.text_scorer.TextScorer`
runs the encoders and upsamples the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_logits(patch_emb: torch.Tensor, class_text_emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Max-logit ensembled class logits per patch.

    Args:
        patch_emb: Patch embeddings ``(B, D, h, w)``; L2-normalised here.
        class_text_emb: Normalised prompt embeddings ``(C, K, D)``: K prompts per
            class. Classes with fewer prompts repeat some (repeats do not change a max).
        temperature: Softmax temperature (> 0).

    Returns:
        ``(B, C, h, w)``: ``max_k cos(patch, prompt_ck) / temperature``.
    """
    b, d, h, w = patch_emb.shape
    c, k, _ = class_text_emb.shape
    # fp32 even under CUDA autocast: a cosine error of 1e-3 is 0.1 logit at temperature 0.01.
    with torch.autocast(device_type=patch_emb.device.type, enabled=False):
        patches = F.normalize(patch_emb.float(), dim=1).reshape(b, d, h * w)
        sims = torch.matmul(class_text_emb.float().reshape(c * k, d), patches)  # (B, C*K, h*w)
    return sims.reshape(b, c, k, h, w).amax(dim=2) / temperature


def outlier_score(logits: torch.Tensor, num_id: int) -> torch.Tensor:
    """``1 - max over ID classes of softmax(logits)``; OOD classes only enter the softmax.

    Args:
        logits: ``(B, C, h, w)`` with the ``num_id`` ID classes first.
        num_id: Number of in-distribution classes (>= 1).

    Returns:
        ``(B, h, w)`` in ``[0, 1)``; higher is more anomalous.
    """
    probs = torch.softmax(logits, dim=1)
    return 1.0 - probs[:, :num_id].amax(dim=1)


def stack_class_embeddings(prompt_emb: torch.Tensor, class_prompt_index: list[list[int]]) -> torch.Tensor:
    """Lays out per-prompt embeddings ``(P, D)`` as ``(C, K, D)``, padding short classes by repetition."""
    k = max(len(idx) for idx in class_prompt_index)
    padded = [[idx[i % len(idx)] for i in range(k)] for idx in class_prompt_index]
    return prompt_emb[torch.tensor(padded, device=prompt_emb.device)]
