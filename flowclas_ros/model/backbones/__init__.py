"""Frozen feature extractors behind one registry: timm ViTs and CNNs, the authors' Rein-DINOv2.

``create_backbone(cfg)`` returns a frozen module mapping a normalised image batch
(B, 3, H, W), H and W multiples of ``pad_multiple``, to a feature map
(B, C, H / patch_size, W / patch_size); ``train()`` keeps it in eval mode, so dropout and
BatchNorm statistics never change.
"""

from flowclas_ros.model.backbones.registry import (
    ALLOW_RANDOM_ENV,
    BackboneError,
    FrozenBackbone,
    create_backbone,
    register_backbone,
    registered_families,
    unregister_backbone,
)

__all__ = [
    "ALLOW_RANDOM_ENV",
    "BackboneError",
    "FrozenBackbone",
    "create_backbone",
    "register_backbone",
    "registered_families",
    "unregister_backbone",
]
