"""Frozen feature extractors built with timm: DINOv2 ViTs and ResNet-style CNNs.

``create_backbone(cfg)`` returns a module mapping a normalised image batch
(B, 3, H, W), H and W multiples of ``pad_multiple``, to a feature map
(B, C, H / patch_size, W / patch_size). Weights come from the timm hub, a local
file (timm or official DINOv2 torch-hub keys) or random init (tests only).
The module is frozen: parameters have ``requires_grad=False`` and ``train()``
keeps it in eval mode, so dropout / BatchNorm statistics never change.
"""

from __future__ import annotations

import logging
import os
import re
import types
from pathlib import Path

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from flowclas_ros.model.checkpoint_meta import sha256_file
from flowclas_ros.model.config import BackboneConfig
from flowclas_ros.model.state_keys import describe_mismatch

logger = logging.getLogger(__name__)

ALLOW_RANDOM_ENV = "FLOWCLAS_ALLOW_RANDOM_BACKBONE"
"""Set to 1 to silence the random-init warning outside pytest (demos, smoke runs)."""

_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "fc_norm.", "head_drop.")


class BackboneError(RuntimeError):
    """The backbone cannot be built or its weights cannot be loaded."""


class FrozenBackbone(nn.Module):
    """Base class: frozen, always in eval mode.

    Attributes:
        feature_dim: Channels C of the output feature map.
        patch_size: Input pixels per feature cell (the feature stride).
        pad_multiple: Input height / width must be a multiple of this.
    """

    feature_dim: int
    patch_size: int
    pad_multiple: int

    def freeze(self) -> None:
        """Disables gradients and switches to eval mode."""
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Ignores ``mode``: a frozen backbone always stays in eval mode."""
        return super().train(False)


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


def is_vit(name: str) -> bool:
    """Whether ``name`` selects the ViT path (anything else is built as a features-only CNN)."""
    return name.startswith("vit_")


def create_backbone(cfg: BackboneConfig, *, warn_random: bool = True) -> FrozenBackbone:
    """Builds the frozen backbone described by ``cfg``.

    Args:
        cfg: Backbone config (name, weight source, layers).
        warn_random: Log a loud warning for ``weights: none`` (suppressed under
            pytest, with env ``FLOWCLAS_ALLOW_RANDOM_BACKBONE=1``, or when the
            caller loads real weights afterwards).

    Returns:
        A frozen ``ViTFeatures`` or ``CNNFeatures`` in eval mode.

    Raises:
        BackboneError: Unknown model, offline hub, missing / bad weights file.
    """
    if cfg.name.startswith("rein_"):
        return _create_rein_backbone(cfg, warn_random)
    if not timm.is_model(cfg.name.split(".")[0]):
        raise BackboneError(f"backbone.name: {cfg.name!r} is not a timm model")
    pretrained = cfg.weights == "hub"
    kwargs = (
        {"num_classes": 0, "dynamic_img_size": True}
        if is_vit(cfg.name)
        else {"features_only": True, "out_indices": tuple(cfg.layers)}
    )
    try:
        net = timm.create_model(cfg.name, pretrained=pretrained, **kwargs)
    except Exception as exc:  # network / hub errors come in many types
        if pretrained:
            raise BackboneError(
                f"cannot download pretrained weights for {cfg.name} ({type(exc).__name__}: {exc}). "
                "Offline? Set backbone.weights=file with backbone.weights_file=<local .safetensors/.pth>, "
                "or backbone.weights=none for tests."
            ) from exc
        raise BackboneError(f"cannot build backbone {cfg.name}: {exc}") from exc
    if cfg.weights == "file":
        load_weights_file(net, cfg.weights_file, cfg.weights_sha256)
    elif cfg.weights == "none" and warn_random:
        _warn_random(cfg.name)
    backbone = ViTFeatures(net, cfg.layers, cfg.norm) if is_vit(cfg.name) else CNNFeatures(net)
    backbone.freeze()
    return backbone


def _create_rein_backbone(cfg: BackboneConfig, warn_random: bool) -> FrozenBackbone:
    """The authors' Rein-DINOv2 (``rein_dinov2_vitb14`` / ``rein_dinov2_vitl14``), see ``rein_dinov2``.

    ``weights: file`` loads Meta's DINOv2 file (``weights_file``) and the Rein
    file (``rein_file``), each checked against its sha256 when set;
    ``weights: none`` keeps random DINOv2 and Rein weights (tests).
    ``layers`` must select the last block; ``norm`` is ignored (no final norm).
    """
    from flowclas_ros.model import rein_dinov2  # imports this module: loaded lazily

    if cfg.name not in rein_dinov2.REIN_MODELS:
        names = ", ".join(rein_dinov2.REIN_MODELS)
        raise BackboneError(f"backbone.name: {cfg.name!r} unknown; expected one of {names}")
    depth = rein_dinov2.REIN_MODELS[cfg.name][2]
    if [layer % depth for layer in cfg.layers] != [depth - 1]:
        raise BackboneError(f"backbone.layers: {cfg.name} gives the last block only ([-1]), not {cfg.layers}")
    if cfg.weights == "hub":
        raise BackboneError(f"backbone.weights: no hub for {cfg.name}; use file (or none for tests)")
    model = rein_dinov2.ReinDinoV2(cfg.name)
    if cfg.weights == "file":
        _check_file("weights_file", cfg.weights_file, cfg.weights_sha256)
        _check_file("rein_file", cfg.rein_file, cfg.rein_sha256)
        try:
            rein_dinov2.load_dinov2_file(model, str(Path(cfg.weights_file).expanduser()))
            rein_dinov2.load_rein_file(model, str(Path(cfg.rein_file).expanduser()))
        except ValueError as exc:  # UnsafeFileError and key / shape mismatches
            raise BackboneError(str(exc)) from exc
    elif warn_random:
        _warn_random(cfg.name)
    model.freeze()
    return model


def _check_file(key: str, file: str, sha256: str) -> None:
    """Raises BackboneError when ``backbone.<key>`` is empty, missing or does not hash to ``sha256``."""
    if not file:
        raise BackboneError(f"backbone.weights=file needs backbone.{key}")
    path = Path(file).expanduser()
    if not path.is_file():
        raise BackboneError(f"{path}: backbone.{key} not found")
    if sha256 and sha256_file(path).lower() != sha256.lower():
        raise BackboneError(f"{path}: sha256 is {sha256_file(path)}, backbone.{key} expects {sha256}")


def _warn_random(name: str) -> None:
    if os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get(ALLOW_RANDOM_ENV) == "1":
        return
    logger.warning(
        "\n%s\nBACKBONE %s HAS RANDOM WEIGHTS (backbone.weights=none): anomaly scores are NOT meaningful.\n"
        "Use backbone.weights=file (or hub) for real use; set %s=1 to silence this.\n%s",
        "!" * 78,
        name,
        ALLOW_RANDOM_ENV,
        "!" * 78,
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state_dict from .safetensors or (without unpickling code) .pth/.pt."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    for key in ("model", "state_dict"):  # common wrappers
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise BackboneError(f"{path}: expected a state_dict of tensors")
    return data


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
    if not weights_file:
        raise BackboneError("backbone.weights=file needs backbone.weights_file")
    path = Path(weights_file).expanduser()
    if not path.is_file():
        raise BackboneError(f"{path}: backbone weights file not found")
    if sha256:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise BackboneError(f"{path}: sha256 is {actual}, config expects {sha256}")
    state = _unchunk_keys(read_state_dict(path))
    if hasattr(net, "patch_embed"):  # ViT: timm's filter converts official DINOv2 keys
        state = checkpoint_filter_fn(state, net)
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    problem = describe_mismatch(net.state_dict(), state)
    if problem:
        raise BackboneError(f"{path}: weights do not fit {type(net).__name__} ({problem})")
    net.load_state_dict(state, strict=True)
