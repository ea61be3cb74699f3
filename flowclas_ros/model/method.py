"""The method seam: what every anomaly method implements, and the one registry that builds it.

A *method* turns frozen backbone features into per-cell anomaly scores and says how it is
trained. :class:`AnomalyMethod` holds what all methods share (the frozen backbone, input
padding, upsampling the cells to pixels, the optional fused VL4AD scorer, export, the
checkpoint keys); a method subclasses it and implements:

* **build from config**: :meth:`AnomalyMethod.build_head`, its trainable parts;
* **training objective**: :meth:`AnomalyMethod.objective`, a
  :class:`~flowclas_ros.model.features.TrainingObjective` mapping a
  :class:`~flowclas_ros.model.features.FeatureBatch` to ``(loss, parts)``;
* **score head**: :meth:`AnomalyMethod.cell_scores`, features -> (B, h, w) cell scores;

and may override :meth:`AnomalyMethod.init_from_batch` (data-dependent initialisation),
:attr:`AnomalyMethod.frozen_prefixes` (checkpoint keys) and :meth:`AnomalyMethod.export_graph`.

``@register_method(name)`` beside the class registers it; :func:`create_method` builds the
method ``model.method`` names. The checkpoint loader, the torch backend, the training loop
and the export call only this interface. The package's own methods are imported on first
use (:data:`BUILTIN_METHODS`), so this module imports none of them.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.config_io import ConfigError
from flowclas_ros.model.backbones import FrozenBackbone, create_backbone
from flowclas_ros.model.checkpoint_meta import FROZEN_PREFIXES
from flowclas_ros.model.config import DEFAULT_METHOD, ModelConfig
from flowclas_ros.model.features import FeatureBatch, TrainingObjective
from flowclas_ros.model.flowclas.anomaly_map import GaussianBlur, image_score, upsample_crop
from flowclas_ros.model.vl4ad.fusion import fuse
from flowclas_ros.model.vl4ad.text_scorer import create_text_scorer

BUILTIN_METHODS = ("flowclas_ros.model.flowclas.torch_model",)
"""Modules whose import registers the package's own methods."""


class MethodError(ConfigError):
    """``model.method`` names no registered method."""


class AnomalyMethod(nn.Module):
    """Base class of every method: frozen backbone -> method head -> per-pixel anomaly map.

    Construction is deterministic in ``cfg.seed`` and leaves the global torch RNG untouched:
    the backbone, the method's :meth:`build_head` and the VL4AD text scorer are built in this
    order under that seed.

    VL4AD is a scorer, not a method (training-free, no head of its own): with ``cfg.text``
    set its map is fused into the method's map per ``cfg.fusion`` (:meth:`fuse_text`).

    Args:
        cfg: Model config.
        warn_random_backbone: Passed to ``create_backbone`` (False when real backbone weights
            are loaded right after construction).
    """

    frozen_prefixes: ClassVar[tuple[str, ...]] = FROZEN_PREFIXES
    """State-dict prefixes a checkpoint references instead of storing (frozen parts)."""

    def __init__(self, cfg: ModelConfig, *, warn_random_backbone: bool = True):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.backbone: FrozenBackbone = create_backbone(cfg.backbone, warn_random=warn_random_backbone)
            self.build_head(self.backbone.feature_dim)
            # Built under the same seed, so a random-init CLIP is reproducible.
            self.text_scorer = create_text_scorer(cfg.text, cfg.preprocess.mean, cfg.preprocess.std)
            if self.text_scorer is not None:
                cfg.text = self.text_scorer.cfg  # prompts resolved and embedded in the config
        self.blur = GaussianBlur(cfg.score.blur_sigma)

    # -- what a method implements ------------------------------------------

    def build_head(self, channels: int) -> None:
        """Creates the method's trainable modules for ``channels`` feature channels."""
        raise NotImplementedError

    def cell_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """Per-cell anomaly scores (B, h, w) of backbone features (B, C, h, w); higher is more anomalous."""
        raise NotImplementedError

    def objective(self, loss: Any, seg: Any, amp_dtype: torch.dtype | None) -> TrainingObjective:
        """The training objective: ``objective(batch: FeatureBatch, generator) -> (loss, parts)``.

        Args:
            loss: The training config's ``loss`` section (a method reads what applies to it).
            seg: The training config's ``seg`` section.
            amp_dtype: Autocast dtype on CUDA, or None.
        """
        raise NotImplementedError

    def init_from_batch(self, batch: FeatureBatch) -> None:
        """Data-dependent initialisation on the first training batch (default: nothing)."""

    # -- shared: input, features, maps ---------------------------------------

    @property
    def patch_size(self) -> int:
        """Input pixels per feature cell (14 for DINOv2; first-stage reduction for CNNs)."""
        return self.backbone.patch_size

    @property
    def pad_multiple(self) -> int:
        """Inputs are padded to multiples of this (= ``patch_size`` for ViTs)."""
        return self.backbone.pad_multiple

    @property
    def feature_dim(self) -> int:
        """Feature channels C of the backbone."""
        return self.backbone.feature_dim

    def train(self, mode: bool = True) -> AnomalyMethod:
        """Sets train / eval mode for the trainable parts; the backbone stays in eval."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer should update (excludes the backbone and fixed buffers)."""
        return [p for p in self.parameters() if p.requires_grad]

    def pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pads a normalised (B, 3, H, W) batch to multiples of ``pad_multiple``.

        ``preprocess.padding: bottom_right`` pads zeros (the mean colour after
        normalisation) at the bottom / right. ``symmetric`` pads what 0.0 on
        0..1 pixels becomes after normalisation (``-mean / std`` per channel),
        split evenly with the odd pixel at the bottom / right, as the authors
        pad before normalising. Returns the padded batch and the original (H, W).
        """
        height, width = x.shape[-2], x.shape[-1]
        pad_h = (-height) % self.pad_multiple
        pad_w = (-width) % self.pad_multiple
        if self.cfg.preprocess.padding != "symmetric":
            return F.pad(x, (0, pad_w, 0, pad_h)), (height, width)
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        mean = torch.tensor(self.cfg.preprocess.mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.cfg.preprocess.std, dtype=x.dtype, device=x.device)
        border = F.pad(torch.zeros_like(x[:, :1]), pads, value=1.0)  # 1 on the padding, 0 inside
        return F.pad(x, pads) + border * (-mean / std).view(1, 3, 1, 1), (height, width)

    def pad_offset(self, padded_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
        """Top / left padding ``pad_input`` added (non-zero only for symmetric padding)."""
        if self.cfg.preprocess.padding != "symmetric":
            return 0, 0
        return (padded_hw[0] - image_hw[0]) // 2, (padded_hw[1] - image_hw[1]) // 2

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen backbone features (B, C, H / patch, W / patch) of a padded batch, without autograd."""
        with torch.no_grad():
            return self.backbone(x)

    def cells_to_pixels(self, cells: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Cell scores (B, h, w) -> pixel map (B, H, W): upsampled, padding cropped, blurred."""
        padded_hw = (cells.shape[-2] * self.patch_size, cells.shape[-1] * self.patch_size)
        return self.blur(upsample_crop(cells, padded_hw, image_hw, self.pad_offset(padded_hw, image_hw)))

    def score_features(self, feats: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Per-pixel anomaly map (B, H, W) from the features of a padded batch of ``image_hw`` images."""
        return self.cells_to_pixels(self.cell_scores(feats), image_hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly map (B, H, W) for a normalised batch (B, 3, H, W) of any H, W (the exported graph)."""
        method_score, text_score = self.score_components(x)
        return method_score if text_score is None else fuse(method_score, text_score, self.cfg.fusion)

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the anomaly map (B, H, W) and image scores (B,) per ``cfg.score.image_score``."""
        score_map = self(x)
        return score_map, image_score(score_map, self.cfg.score.image_score)

    # -- the fused scorer (VL4AD) ---------------------------------------------

    def score_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The method's map and, when text fusion is on, the text score map (else None)."""
        padded, image_hw = self.pad_input(x)
        return self.score_features(self.extract_features(padded), image_hw), self.text_score(x)

    @property
    def fusion_enabled(self) -> bool:
        """Whether a VL4AD text score is fused into the output."""
        return self.text_scorer is not None and self.cfg.fusion.mode != "off"

    def text_score(self, x: torch.Tensor) -> torch.Tensor | None:
        """The VL4AD text score map (B, H, W) of the unpadded batch, or None when fusion is off."""
        if not self.fusion_enabled:
            return None
        with torch.no_grad():
            return self.text_scorer(x)

    def fuse_text(self, method_score: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Combines the method's map with the text score of ``x`` per ``cfg.fusion`` (identity when off)."""
        text_score = self.text_score(x)
        return method_score if text_score is None else fuse(method_score, text_score, self.cfg.fusion)

    # -- checkpoint keys and export -------------------------------------------

    def is_stored_key(self, key: str) -> bool:
        """Whether a state-dict key is stored in a checkpoint / training state (not a frozen part)."""
        return not key.startswith(self.frozen_prefixes)

    def stored_state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint stores: every key but the frozen parts, detached, on CPU."""
        state = self.state_dict()
        return {k: v.detach().cpu().contiguous() for k, v in state.items() if self.is_stored_key(k)}

    @contextlib.contextmanager
    def export_graph(self, input_size: tuple[int, int], padded_size: tuple[int, int]) -> Iterator[nn.Module]:
        """The module ONNX export traces at one input size (``forward``), prepared for tracing.

        ViT backbones get a constant position embedding for ``padded_size`` (undone after);
        the VL4AD scorer fixes its CLIP position embedding and text embeddings.
        """
        fix_pos_embed = getattr(self.backbone, "fix_pos_embed", None)  # ViTs only; CNNs need nothing
        if fix_pos_embed is not None:
            fix_pos_embed(padded_size)
        if self.text_scorer is not None:
            self.text_scorer.prepare(input_size)
        try:
            yield self
        finally:
            if fix_pos_embed is not None:
                fix_pos_embed(None)


Method = TypeVar("Method", bound=type[AnomalyMethod])
Builder = Callable[..., AnomalyMethod]
"""``build(cfg, *, warn_random_backbone)`` -> the method (an :class:`AnomalyMethod` subclass is one)."""

_METHODS: dict[str, Builder] = {}
_builtins_loaded = False


def register_method(name: str) -> Callable[[Method], Method]:
    """Class decorator registering an :class:`AnomalyMethod` subclass as ``model.method: name``.

    Raises:
        ValueError: ``name`` is registered already.
    """

    def decorate(cls: Method) -> Method:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered already")
        _METHODS[name] = cls
        return cls

    return decorate


def unregister_method(name: str) -> None:
    """Removes a method (tests that register a dummy one clean up with this)."""
    _METHODS.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_METHODS:
            importlib.import_module(module)


def registered_methods() -> list[str]:
    """Registered method names (the package's own first)."""
    _load_builtins()
    return list(_METHODS)


def create_method(cfg: ModelConfig, *, warn_random_backbone: bool = True) -> AnomalyMethod:
    """Builds the method ``cfg.method`` names (in train mode, like any new ``nn.Module``).

    Raises:
        MethodError: No method of that name is registered.
        BackboneError, TextScorerError, ConfigError: The parts cannot be built.
    """
    _load_builtins()
    name = cfg.method or DEFAULT_METHOD
    if name not in _METHODS:
        known = ", ".join(_METHODS)
        raise MethodError(f"model.method: {name!r} is not a registered method (methods: {known})")
    return _METHODS[name](cfg, warn_random_backbone=warn_random_backbone)
