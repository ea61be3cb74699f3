"""The backbone registry: one factory, families registered beside their definitions.

Each family module decorates its builder with :func:`register_backbone`, naming the family
and the backbone names it accepts (timm-style ``@register``). :func:`create_backbone` asks
the families in registration order and builds the backbone of the first one that accepts
``cfg.name``; the families that ship with the package are imported on first use
(:data:`BUILTIN_FAMILIES`), so this module imports none of them and nothing imports in a
circle. A new family is one module with one decorated builder (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from flowclas_ros.model.checkpoint_meta import sha256_file
from flowclas_ros.model.config import BackboneConfig

logger = logging.getLogger(__name__)

ALLOW_RANDOM_ENV = "FLOWCLAS_ALLOW_RANDOM_BACKBONE"
"""Set to 1 to silence the random-init warning outside pytest (demos, smoke runs)."""

BUILTIN_FAMILIES = (
    "flowclas_ros.model.backbones.rein_dinov2",  # exact names first: the authors' Rein-DINOv2
    "flowclas_ros.model.backbones.timm_models",  # then any timm model (ViTs, then CNNs)
)
"""Modules whose import registers the package's own families, in the order they are asked."""


class BackboneError(RuntimeError):
    """The backbone cannot be built or its weights cannot be loaded."""


class FrozenBackbone(nn.Module):
    """Base class: frozen, always in eval mode.

    Subclasses map a normalised (B, 3, H, W) batch, H and W multiples of
    ``pad_multiple``, to a (B, C, H / patch_size, W / patch_size) feature map.

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


Builder = Callable[[BackboneConfig, bool], FrozenBackbone]
"""``build(cfg, warn_random)`` -> an unfrozen or frozen backbone (the factory freezes it)."""


@dataclass(frozen=True)
class BackboneFamily:
    """One registered family: which names it accepts and how it builds them."""

    name: str
    accepts: Callable[[str], bool]
    build: Builder


_FAMILIES: dict[str, BackboneFamily] = {}
_builtins_loaded = False


def register_backbone(family: str, accepts: Callable[[str], bool]) -> Callable[[Builder], Builder]:
    """Decorator registering ``build`` as the builder of the backbones ``accepts`` says yes to.

    Args:
        family: A unique family name (shown in errors and ``registered_families()``).
        accepts: ``accepts(cfg.name)``: whether this family builds that backbone.

    Raises:
        ValueError: ``family`` is registered already.
    """

    def decorate(build: Builder) -> Builder:
        if family in _FAMILIES:
            raise ValueError(f"backbone family {family!r} is registered already")
        _FAMILIES[family] = BackboneFamily(family, accepts, build)
        return build

    return decorate


def unregister_backbone(family: str) -> None:
    """Removes a family (tests that register a dummy one clean up with this)."""
    _FAMILIES.pop(family, None)


def registered_families() -> list[str]:
    """Family names in the order :func:`create_backbone` asks them."""
    _load_builtins()
    return list(_FAMILIES)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_FAMILIES:
            importlib.import_module(module)


def create_backbone(cfg: BackboneConfig, *, warn_random: bool = True) -> FrozenBackbone:
    """Builds the frozen backbone described by ``cfg`` with the first family that accepts its name.

    Args:
        cfg: Backbone config (name, weight source, layers).
        warn_random: Log a loud warning for ``weights: none`` (suppressed under
            pytest, with env ``FLOWCLAS_ALLOW_RANDOM_BACKBONE=1``, or when the
            caller loads real weights afterwards).

    Returns:
        The family's backbone, frozen and in eval mode.

    Raises:
        BackboneError: No family accepts the name, or the family cannot build it
            (unknown model, offline hub, missing / bad weights file).
    """
    _load_builtins()
    for family in _FAMILIES.values():
        if family.accepts(cfg.name):
            backbone = family.build(cfg, warn_random)
            backbone.freeze()
            return backbone
    raise BackboneError(
        f"backbone.name: {cfg.name!r} is not a timm model nor a registered backbone "
        f"(families: {', '.join(_FAMILIES)})"
    )


def check_weights_file(key: str, file: str, sha256: str) -> Path:
    """Returns ``backbone.<key>``'s path; BackboneError when empty, missing or not hashing to ``sha256``."""
    if not file:
        raise BackboneError(f"backbone.weights=file needs backbone.{key}")
    path = Path(file).expanduser()
    if not path.is_file():
        raise BackboneError(f"{path}: backbone.{key} not found")
    if sha256:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise BackboneError(f"{path}: sha256 is {actual}, backbone.{key} expects {sha256}")
    return path


def warn_random(name: str) -> None:
    """Logs a loud warning that ``name`` has random weights (silent under pytest or ALLOW_RANDOM_ENV=1)."""
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
