"""Dense per-patch CLIP image embeddings, MaskCLIP-style, on an open_clip ViT.

CLIP's image tower is trained to produce one pooled embedding. MaskCLIP
(Zhou et al., ECCV 2022, "Extract Free Dense Labels from CLIP") gets per-patch
embeddings in the joint text-image space by changing only the last block:

- Blocks ``0 .. L-2`` run unchanged on ``[cls, patches] + pos_embed``.
- In the last block the q-k attention is skipped: each token keeps only its
  own value embedding, ``a = out_proj(W_v ln_1(x) + b_v)``.
- ``variant="maskclip"`` (the released MaskCLIP code): the block's residual
  and MLP are kept, ``x' = x + ls_1(a)``, ``x'' = x' + ls_2(mlp(ln_2(x')))``.
  This equals running the unchanged last block with an attention mask that
  lets every token attend only to itself (the tests check exactly that).
- ``variant="value_only"`` (ClearCLIP-style): ``x'' = a``; no residual, no MLP.
- Then ``ln_post`` and the projection ``proj`` into the joint space, patch
  tokens only, reshaped to ``(B, D, h, w)``. The class token and the pooled
  output are not used.

For inputs whose patch grid differs from the model's native grid, the patch
part of the positional embedding is resized bicubically (as open_clip does when
loading weights at a new size). The resized table is cached per grid size and,
being computed outside any trace, enters an ONNX export as a constant.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

DenseVariant = Literal["maskclip", "value_only"]


class DenseClipEncoder(nn.Module):
    """Per-patch joint-space embeddings from an open_clip ``VisionTransformer``.

    Args:
        visual: ``open_clip`` CLIP model's ``.visual`` (a ViT with the default
            ``ResidualAttentionBlock`` and ``nn.MultiheadAttention``).
        variant: How the last block is changed; see the module docstring.

    Raises:
        ValueError: If the tower is not a supported open_clip ViT.
    """

    def __init__(self, visual: nn.Module, variant: DenseVariant = "maskclip") -> None:
        super().__init__()
        _check_supported(visual)
        self.visual = visual
        self.variant = variant
        self.patch_size: tuple[int, int] = tuple(visual.patch_size)
        self.native_grid: tuple[int, int] = tuple(visual.grid_size)
        self.embed_dim: int = visual.proj.shape[1]
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def _apply(self, fn, *args, **kwargs):
        # .to() / .half() / .cuda() invalidate the cached positional tables.
        self._pos_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positional table ``(1 + gh * gw, width)`` for a patch grid; cached per grid."""
        table = self.visual.positional_embedding
        if tuple(grid) == self.native_grid:
            return table
        cached = self._pos_cache.get(tuple(grid))
        if cached is None:
            with torch.no_grad():
                cls_pos, patch_pos = table[:1], table[1:]
                gh0, gw0 = self.native_grid
                patch_pos = patch_pos.reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
                patch_pos = F.interpolate(
                    patch_pos.float(), size=tuple(grid), mode="bicubic", align_corners=False
                )
                patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(table.dtype)
                cached = torch.cat([cls_pos, patch_pos], dim=0).detach()
            self._pos_cache[tuple(grid)] = cached
        return cached

    def prepare(self, image_hw: tuple[int, int]) -> None:
        """Precomputes the positional table for an input size (before an ONNX export)."""
        self.positional_embedding(self.grid_for(image_hw))

    def grid_for(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Patch grid of an input of size ``image_hw`` (must be multiples of the patch)."""
        h, w = image_hw
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"input size {h}x{w} is not a multiple of the CLIP patch size {ph}x{pw}")
        return h // ph, w // pw

    def tokens_before_last_block(self, x: torch.Tensor) -> torch.Tensor:
        """Runs patch embedding, ``ln_pre`` and all blocks but the last -> ``(B, 1+N, width)``."""
        v = self.visual
        grid = self.grid_for((int(x.shape[-2]), int(x.shape[-1])))
        t = v.conv1(x).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], dim=1) + self.positional_embedding(grid).to(t.dtype)
        t = v.ln_pre(t)  # open_clip's patch dropout (training only) is deliberately not applied
        for block in v.transformer.resblocks[:-1]:
            t = block(t)
        return t

    def last_block(self, t: torch.Tensor) -> torch.Tensor:
        """The modified last block (value path, no q-k attention); see the module docstring."""
        block = self.visual.transformer.resblocks[-1]
        attn: nn.MultiheadAttention = block.attn
        width = attn.embed_dim
        # in_proj_weight stacks [W_q; W_k; W_v] along dim 0 (nn.MultiheadAttention layout).
        w_v = attn.in_proj_weight[2 * width :]
        b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
        value = attn.out_proj(F.linear(block.ln_1(t), w_v, b_v))
        if self.variant == "value_only":
            return value
        t = t + block.ls_1(value)
        return t + block.ls_2(block.mlp(block.ln_2(t)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense embeddings.

        Args:
            x: CLIP-normalised images ``(B, 3, H, W)``, H and W multiples of the patch size.

        Returns:
            Un-normalised joint-space embeddings ``(B, D, H/p, W/p)``.
        """
        gh, gw = self.grid_for((int(x.shape[-2]), int(x.shape[-1])))
        t = self.last_block(self.tokens_before_last_block(x))
        patches = self.visual.ln_post(t[:, 1:]) @ self.visual.proj
        return patches.transpose(1, 2).reshape(x.shape[0], self.embed_dim, gh, gw)


def _check_supported(visual: nn.Module) -> None:
    """Fails early, naming what is missing, for towers this path does not handle."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise ValueError(
            "dense CLIP embeddings need an open_clip VisionTransformer image tower, got "
            f"{type(visual).__name__} (ResNet / timm / ConvNeXt towers are not supported)"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError("dense CLIP embeddings: towers with attentional pooling (CoCa) are not supported")
    if getattr(visual, "proj", None) is None:
        raise ValueError("dense CLIP embeddings: the image tower has no projection to the joint space")
    if not visual.transformer.batch_first:
        raise ValueError("dense CLIP embeddings: only batch_first transformers are supported")
    last = visual.transformer.resblocks[-1]
    if not isinstance(last, ResidualAttentionBlock) or not getattr(last.attn, "_qkv_same_embed_dim", False):
        raise ValueError(
            "dense CLIP embeddings: the last block must be open_clip's default ResidualAttentionBlock "
            "with a packed nn.MultiheadAttention in_proj (custom qk-norm / scaled-cosine blocks unsupported)"
        )
