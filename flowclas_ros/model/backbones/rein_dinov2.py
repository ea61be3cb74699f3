"""DINOv2 ViT-B/14 / ViT-L/14 with LoRA-Rein adapters: the FlowCLAS authors' released backbone.

Matches the authors' ``ReinsDinoV2`` (their fork of dinov2 at
``joonielee832/dinov2@1e7a59b`` plus ``reins.py``) at inference:

* the ViT is timm's DINOv2 ViT (same blocks, LayerNorm eps 1e-6, fused
  attention) built with LayerScale ``init_values=1.0``;
* the position embedding is resampled the dinov2 way (bicubic, no antialias,
  ``scale_factor = (grid + 0.1) / 37`` rather than an output size; the 37x37
  table is used as is for a square 37x37 grid), see :func:`dinov2_pos_embed`;
* after every block a LoRA-Rein adapter updates the patch tokens (class token
  kept), see :class:`LoRAReins`;
* the feature is the last block's patch tokens after its adapter, with no
  final LayerNorm.

Weights: Meta's ``dinov2_vit{b,l}14_pretrain.pth`` (plain dict, ``mask_token``
dropped) and the Rein file ``{"state_dict": {"backbone.reins.*": ...}}`` (all
other keys ignored), both read with :func:`~flowclas_ros.model.safe_load.safe_torch_load`.
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.model.backbones.registry import (
    BackboneError,
    FrozenBackbone,
    check_weights_file,
    register_backbone,
    warn_random,
)
from flowclas_ros.model.config import BackboneConfig
from flowclas_ros.model.safe_load import UnsafeFileError, safe_torch_load
from flowclas_ros.model.state_keys import describe_mismatch

REIN_MODELS = {
    "rein_dinov2_vitb14": ("vit_base_patch14_dinov2", 768, 12, 12),
    "rein_dinov2_vitl14": ("vit_large_patch14_dinov2", 1024, 24, 16),
}
"""Backbone name -> (timm model, embed dim, depth, heads = LoRA rank)."""

INTERPOLATE_OFFSET = 0.1
REIN_TOKENS = 100
REIN_QUERY_DIMS = 256
REIN_PREFIX = "backbone.reins."
META_DROPPED = ("mask_token",)
"""Keys of Meta's DINOv2 file the inference model does not use."""


def dinov2_pos_embed(pos_embed: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """dinov2's ``interpolate_pos_encoding`` for a (1, 1 + M*M, C) table and a (h, w) patch grid.

    The patch table is resized bicubically (``antialias=False``) with
    ``scale_factor = ((h + 0.1) / M, (w + 0.1) / M)``; torch then maps output
    pixels to input pixels with that scale, not with ``M / h``, which is why
    timm's size-based resampling differs. A square M x M grid returns the
    table unchanged, as dinov2 does.
    """
    side = math.isqrt(pos_embed.shape[1] - 1)
    if tuple(grid_hw) == (side, side):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    channels = pos_embed.shape[-1]
    grid = patch_pos.reshape(1, side, side, channels).permute(0, 3, 1, 2)
    scale = ((grid_hw[0] + INTERPOLATE_OFFSET) / side, (grid_hw[1] + INTERPOLATE_OFFSET) / side)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(grid.shape[-2:]) != tuple(grid_hw):
        raise ValueError(f"position embedding resampled to {tuple(grid.shape[-2:])}, not {tuple(grid_hw)}")
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, -1, channels)
    return torch.cat((cls_pos, patch_pos), dim=1).to(pos_embed.dtype)


class LoRAReins(nn.Module):
    """The Rein adapter with LoRA-factorised learnable tokens (one token set per block).

    For block ``l`` with tokens ``T = A_l B_l`` (100 x C) and patch tokens ``f``:
    ``attn = softmax(f T^T / sqrt(C))``, ``d = attn[:, 1:] mlp_token2feat(T[1:])``,
    ``f <- f + scale * mlp_delta_f(d + f)``. ``transform`` / ``merge`` only feed
    the authors' segmentation queries; they are kept so the Rein file loads
    strictly. Parameter names match the Rein file's ``backbone.reins.*`` keys.
    """

    def __init__(self, depth: int, dim: int, rank: int, patch_size: int = 14):
        super().__init__()
        self.learnable_tokens_a = nn.Parameter(torch.empty(depth, REIN_TOKENS, rank))
        self.learnable_tokens_b = nn.Parameter(torch.empty(depth, rank, dim))
        self.scale = nn.Parameter(torch.tensor(1e-3))
        self.mlp_token2feat = nn.Linear(dim, dim)
        self.mlp_delta_f = nn.Linear(dim, dim)
        self.transform = nn.Linear(dim, REIN_QUERY_DIMS)
        self.merge = nn.Linear(REIN_QUERY_DIMS * 3, REIN_QUERY_DIMS)
        bound = math.sqrt(6.0 / (3 * patch_size * patch_size + math.sqrt(dim * rank)))  # the authors' init
        nn.init.uniform_(self.learnable_tokens_a, -bound, bound)
        nn.init.uniform_(self.learnable_tokens_b, -bound, bound)
        self.dim = dim

    def forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Adapts the patch tokens of (B, 1 + N, C) tokens after block ``layer``; the class token is kept."""
        cls_token, feats = x[:, :1], x[:, 1:]
        tokens = self.learnable_tokens_a[layer] @ self.learnable_tokens_b[layer]
        attn = torch.softmax((feats @ tokens.t()) * self.dim**-0.5, dim=-1)
        delta = attn[:, :, 1:] @ self.mlp_token2feat(tokens[1:])
        delta = self.mlp_delta_f(delta + feats)
        return torch.cat((cls_token, feats + delta * self.scale), dim=1)


class ReinDinoV2(FrozenBackbone):
    """timm DINOv2 ViT + LoRA-Reins, returning the last block's adapted patch tokens as NCHW.

    ``fix_pos_embed((H, W))`` precomputes the position embedding for
    one padded input size (the export hook shared with ``ViTFeatures``).
    """

    def __init__(self, name: str):
        super().__init__()
        timm_name, dim, depth, heads = REIN_MODELS[name]
        # weight_init="skip": timm's trunc-normal init of every weight costs ~4x the layers' own default init
        # (50 s for ViT-L here) and is overwritten whenever weights are loaded; random models (tests) keep the
        # layers' default init plus a small random position embedding.
        self.vit = timm.create_model(
            timm_name,
            pretrained=False,
            num_classes=0,
            dynamic_img_size=True,
            init_values=1.0,
            weight_init="skip",
        )
        with torch.no_grad():
            self.vit.pos_embed.normal_(0.0, 0.02)
            self.vit.cls_token.normal_(0.0, 1e-6)
        self.reins = LoRAReins(depth, dim, heads)
        self.patch_size = 14
        self.pad_multiple = 14
        self.feature_dim = dim
        self.fixed_grid: tuple[int, int] | None = None

    def fix_pos_embed(self, input_hw: tuple[int, int] | None) -> None:
        """Stores the resampled position embedding for one padded input (H, W) (None: dynamic again)."""
        if input_hw is None:
            self._buffers.pop("fixed_pos_embed", None)
            self.fixed_grid = None
            return
        grid = (input_hw[0] // self.patch_size, input_hw[1] // self.patch_size)
        with torch.no_grad():
            table = dinov2_pos_embed(self.vit.pos_embed, grid).detach().clone()
        self.register_buffer("fixed_pos_embed", table, persistent=False)
        self.fixed_grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised, H and W multiples of 14 -> (B, C, H / 14, W / 14)."""
        batch, _, height, width = x.shape
        grid = (height // self.patch_size, width // self.patch_size)
        tokens = self.vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat((self.vit.cls_token.expand(batch, -1, -1), tokens), dim=1)
        if self.fixed_grid is not None:
            if grid != self.fixed_grid:
                raise ValueError(f"input grid {grid} differs from the fixed export grid {self.fixed_grid}")
            tokens = tokens + self.fixed_pos_embed
        else:
            tokens = tokens + dinov2_pos_embed(self.vit.pos_embed, grid)
        for index, block in enumerate(self.vit.blocks):
            tokens = self.reins(block(tokens), index)
        return tokens[:, 1:].transpose(1, 2).reshape(batch, -1, *grid)


def _strict_fit(module: nn.Module, state: dict, source: str) -> None:
    """Loads ``state`` into ``module`` or raises ValueError naming missing / unexpected / mis-shaped keys."""
    problem = describe_mismatch(module.state_dict(), state, limit=6)
    if problem:
        raise ValueError(f"{source}: {problem}")
    module.load_state_dict(state, strict=True)


def load_dinov2_file(model: ReinDinoV2, path: str) -> None:
    """Loads Meta's ``dinov2_vit*14_pretrain.pth`` into ``model.vit`` (``mask_token`` dropped)."""
    data = safe_torch_load(path)
    if not isinstance(data, dict):
        raise UnsafeFileError(f"{path}: expected Meta's DINOv2 state dict, got {type(data).__name__}")
    state = {k: v for k, v in data.items() if k not in META_DROPPED}
    _strict_fit(model.vit, state, f"{path} (DINOv2 weights)")


def load_rein_file(model: ReinDinoV2, path: str) -> None:
    """Loads the ``backbone.reins.*`` entries of a Rein file's ``state_dict`` (other keys ignored)."""
    data = safe_torch_load(path)
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise UnsafeFileError(f"{path}: expected a dict with a 'state_dict' of backbone.reins.* tensors")
    reins = {k.removeprefix(REIN_PREFIX): v for k, v in state.items() if str(k).startswith(REIN_PREFIX)}
    if not reins:
        raise UnsafeFileError(f"{path}: no backbone.reins.* keys (is this a Rein checkpoint?)")
    _strict_fit(model.reins, reins, f"{path} (Rein weights)")


@register_backbone("rein_dinov2", accepts=lambda name: name in REIN_MODELS)
def build_rein(cfg: BackboneConfig, warn_random_weights: bool) -> ReinDinoV2:
    """The authors' Rein-DINOv2 (``rein_dinov2_vitb14`` / ``rein_dinov2_vitl14``).

    ``weights: file`` loads Meta's DINOv2 file (``weights_file``) and the Rein
    file (``rein_file``), each checked against its sha256 when set;
    ``weights: none`` keeps random DINOv2 and Rein weights (tests).
    ``layers`` must select the last block; ``norm`` is ignored (no final norm).
    """
    depth = REIN_MODELS[cfg.name][2]
    if [layer % depth for layer in cfg.layers] != [depth - 1]:
        raise BackboneError(f"backbone.layers: {cfg.name} gives the last block only ([-1]), not {cfg.layers}")
    if cfg.weights == "hub":
        raise BackboneError(f"backbone.weights: no hub for {cfg.name}; use file (or none for tests)")
    model = ReinDinoV2(cfg.name)
    if cfg.weights == "file":
        dinov2 = check_weights_file("weights_file", cfg.weights_file, cfg.weights_sha256)
        rein = check_weights_file("rein_file", cfg.rein_file, cfg.rein_sha256)
        try:
            load_dinov2_file(model, str(dinov2))
            load_rein_file(model, str(rein))
        except ValueError as exc:  # UnsafeFileError and key / shape mismatches
            raise BackboneError(str(exc)) from exc
    elif warn_random_weights:
        warn_random(cfg.name)
    return model
