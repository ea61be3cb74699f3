"""timm backbones: DINOv2-style ViTs (patch tokens of chosen blocks) and features-only CNNs.

Registered as two families of :mod:`flowclas_ros.model.backbones.registry`: ``timm_vit``
(any timm model defined in timm's ``vision_transformer`` module, e.g. DINOv2) and
``timm_cnn`` (any other timm model, built ``features_only``). Weights come from the timm hub,
a local file (timm or official DINOv2 torch-hub keys) or random init (tests only).
"""

from __future__ import annotations

import re
import types

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from flowclas_ros.model.backbones.registry import (
    BackboneError,
    FrozenBackbone,
    check_weights_file,
    register_backbone,
    warn_random,
)
from flowclas_ros.model.config import BackboneConfig
from flowclas_ros.model.state_keys import describe_mismatch
from flowclas_ros.model.weights import WeightsFileError, read_state_dict

_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "fc_norm.", "head_drop.")


class ViTFeatures(FrozenBackbone):
    """Patch tokens of selected blocks of a timm ViT (e.g. DINOv2), as a NCHW map.

    With ``norm`` each selected block's tokens pass through the ViT's final
    LayerNorm (as DINOv2's ``get_intermediate_layers(norm=True)`` does);
    class and register tokens are dropped; several blocks are concatenated
    along channels.
    """

    def __init__(self, vit: nn.Module, layers: list[int], norm: bool = True):
        super().__init__()
        self.vit = vit
        self.layers = list(layers)
        self.norm = norm
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.pad_multiple = self.patch_size
        self.feature_dim = int(vit.embed_dim) * len(self.layers)
        self.fixed_grid: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns (B, C, H / 14, W / 14) features for a normalised (B, 3, H, W) batch."""
        feats = self.vit.forward_intermediates(
            x, indices=self.layers, norm=self.norm, output_fmt="NCHW", intermediates_only=True
        )
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)

    def fix_pos_embed(self, input_hw: tuple[int, int] | None) -> None:
        """Precomputes the position embedding for one input size (for ONNX / TensorRT export).

        timm resamples the position embedding on every call (bicubic with
        antialias), which ONNX cannot express. After ``fix_pos_embed((H, W))``
        the resampled table for that size is a constant buffer and inputs must
        be exactly (H, W) (already padded). ``fix_pos_embed(None)`` restores the
        dynamic behaviour.

        Args:
            input_hw: Padded input (height, width), multiples of ``patch_size``, or None.
        """
        vit = self.vit
        if input_hw is None:
            vit.__dict__.pop("_pos_embed", None)  # back to the class method
            vit._buffers.pop("flowclas_fixed_pos_embed", None)
            self.fixed_grid = None
            return
        grid = (input_hw[0] // self.patch_size, input_hw[1] // self.patch_size)
        prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        with torch.no_grad():
            table = resample_abs_pos_embed(
                vit.pos_embed, new_size=grid, old_size=vit.patch_embed.grid_size, num_prefix_tokens=prefix
            )
        vit.register_buffer("flowclas_fixed_pos_embed", table.detach().clone(), persistent=False)
        self.fixed_grid = grid
        vit._pos_embed = types.MethodType(_fixed_pos_embed, vit)  # instance attribute shadows the method


def _fixed_pos_embed(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Drop-in for timm's ``VisionTransformer._pos_embed`` that adds a precomputed table."""
    batch, height, width, channels = x.shape  # NHWC: the dynamic_img_size patch embed output
    x = x.reshape(batch, height * width, channels)
    prefix = []
    if vit.cls_token is not None:
        prefix.append(vit.cls_token.expand(batch, -1, -1))
    if vit.reg_token is not None:
        prefix.append(vit.reg_token.expand(batch, -1, -1))
    if vit.no_embed_class:  # the table covers patch tokens only (DINOv2 with registers)
        x = x + vit.flowclas_fixed_pos_embed
        x = torch.cat(prefix + [x], dim=1) if prefix else x
    else:
        x = torch.cat(prefix + [x], dim=1) if prefix else x
        x = x + vit.flowclas_fixed_pos_embed
    return vit.pos_drop(x)


class CNNFeatures(FrozenBackbone):
    """Multi-scale CNN features (CL-flow style): every stage resized to the first one, concatenated."""

    def __init__(self, cnn: nn.Module):
        super().__init__()
        self.cnn = cnn
        reductions = cnn.feature_info.reduction()
        self.patch_size = int(reductions[0])
        self.pad_multiple = int(max(reductions))
        self.feature_dim = int(sum(cnn.feature_info.channels()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns (B, C, H / stride, W / stride) features, stride = first stage's reduction."""
        feats = self.cnn(x)
        size = feats[0].shape[-2:]
        resized = [feats[0]] + [
            nn.functional.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]
        ]
        return torch.cat(resized, dim=1)


def _timm_arch(name: str) -> str | None:
    """The timm architecture name for ``name`` (a pretrained tag such as ``.lvd142m`` dropped), or None."""
    arch = name.split(".")[0]
    return arch if timm.is_model(arch) else None


def is_vit(name: str) -> bool:
    """Whether timm defines ``name`` in its ``vision_transformer`` module (patch-token ViT path)."""
    arch = _timm_arch(name)
    return arch is not None and timm.models.model_entrypoint(arch).__module__.endswith(".vision_transformer")


@register_backbone("timm_vit", accepts=is_vit)
def build_vit(cfg: BackboneConfig, warn_random_weights: bool) -> FrozenBackbone:
    """A timm ViT (e.g. ``vit_small_patch14_dinov2``): patch tokens of ``cfg.layers`` as NCHW."""
    net = _create_timm(cfg, num_classes=0, dynamic_img_size=True)
    _load_or_warn(net, cfg, warn_random_weights)
    return ViTFeatures(net, cfg.layers, cfg.norm)


@register_backbone("timm_cnn", accepts=lambda name: _timm_arch(name) is not None)
def build_cnn(cfg: BackboneConfig, warn_random_weights: bool) -> FrozenBackbone:
    """Any other timm model, built ``features_only`` with stages ``cfg.layers`` (CL-flow style)."""
    net = _create_timm(cfg, features_only=True, out_indices=tuple(cfg.layers))
    _load_or_warn(net, cfg, warn_random_weights)
    return CNNFeatures(net)


def _create_timm(cfg: BackboneConfig, **kwargs) -> nn.Module:
    pretrained = cfg.weights == "hub"
    try:
        return timm.create_model(cfg.name, pretrained=pretrained, **kwargs)
    except Exception as exc:  # network / hub errors come in many types
        if pretrained:
            raise BackboneError(
                f"cannot download pretrained weights for {cfg.name} ({type(exc).__name__}: {exc}). "
                "Offline? Set backbone.weights=file with backbone.weights_file=<local .safetensors/.pth>, "
                "or backbone.weights=none for tests."
            ) from exc
        raise BackboneError(f"cannot build backbone {cfg.name}: {exc}") from exc


def _load_or_warn(net: nn.Module, cfg: BackboneConfig, warn_random_weights: bool) -> None:
    if cfg.weights == "file":
        load_weights_file(net, cfg.weights_file, cfg.weights_sha256)
    elif cfg.weights == "none" and warn_random_weights:
        warn_random(cfg.name)


def _unchunk_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps DINOv2 ``BlockChunk`` keys ``blocks.<chunk>.<block>.x`` to ``blocks.<block>.x``."""
    return {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in state.items()}


def load_weights_file(net: nn.Module, weights_file: str, sha256: str = "") -> None:
    """Loads a local state_dict into a timm model, accepting timm or official DINOv2 keys.

    Official DINOv2 checkpoints are converted by timm's own
    ``vision_transformer.checkpoint_filter_fn`` (drops ``mask_token``, moves
    ``register_tokens`` to ``reg_token`` and folds the class position into
    ``cls_token``, renames SwiGLU ``w12``/``w3``); chunked ``blocks.c.i.``
    keys (ViT-g FSDP layout) are flattened by hand first, because timm does
    not handle them. Classifier-head keys are ignored; any other missing or
    unexpected key is an error.

    Raises:
        BackboneError: Missing file, hash mismatch, unreadable file or key mismatch.
    """
    path = check_weights_file("weights_file", weights_file, sha256)
    try:
        state = _unchunk_keys(read_state_dict(path))
    except WeightsFileError as exc:
        raise BackboneError(str(exc)) from exc
    if hasattr(net, "patch_embed"):  # ViT: timm's filter converts official DINOv2 keys
        state = checkpoint_filter_fn(state, net)
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    problem = describe_mismatch(net.state_dict(), state)
    if problem:
        raise BackboneError(f"{path}: weights do not fit {type(net).__name__} ({problem})")
    net.load_state_dict(state, strict=True)
