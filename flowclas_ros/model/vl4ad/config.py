"""The VL4AD config dataclasses (``ModelConfig.text`` and ``ModelConfig.fusion``), without torch.

They live apart from :mod:`.text_scorer` and :mod:`.fusion` so that reading a
checkpoint's config (deployment, no torch installed) does not import the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from flowclas_ros.model.vl4ad.prompts import PromptSet

FusionMode = Literal["off", "weighted", "max"]
NormKind = Literal["minmax", "zscore"]


@dataclass
class FusionConfig:
    """How the flow and text scores are combined; ``ModelConfig.fusion``.

    Attributes:
        mode: ``off`` (flow score only), ``weighted`` or ``max``.
        weight: Weight of the text score in ``weighted`` mode, in ``[0, 1]``.
        norm: ``minmax`` (pairs are ``(lo, hi)``) or ``zscore`` (pairs are ``(mean, std)``).
        flow_norm: Normalisation statistics of the flow score on validation inliers.
        text_norm: Normalisation statistics of the text score on validation inliers.
    """

    mode: FusionMode = "off"
    weight: float = 0.5
    norm: NormKind = "minmax"
    flow_norm: tuple[float, float] = (0.0, 1.0)
    text_norm: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion.weight must be in [0, 1], got {self.weight}")
        for name in ("flow_norm", "text_norm"):
            a, b = getattr(self, name)
            if self.norm == "minmax" and not b > a:
                raise ValueError(f"fusion.{name}: minmax needs lo < hi, got ({a}, {b})")
            if self.norm == "zscore" and not b > 0:
                raise ValueError(f"fusion.{name}: zscore needs std > 0, got ({a}, {b})")


@dataclass
class TextScorerConfig:
    """The optional VL4AD text scorer; ``ModelConfig.text`` holds one or ``None``.

    Attributes:
        model: open_clip architecture name (``open_clip.list_models()``), e.g.
            ``ViT-B-16``. Only ViT image towers are supported.
        weights: ``hub`` (open_clip pretrained tag, downloaded), ``file`` (a
            local state_dict: ``.safetensors`` or a ``torch.save`` dict; never
            unpickled) or ``none`` (random init, tests only).
        pretrained: open_clip pretrained tag used when ``weights == "hub"``.
        weights_file: Local weights when ``weights == "file"``.
        weights_sha256: Hash of ``weights_file``, checked on load when set.
        arch: Overrides of the open_clip model config (``embed_dim``,
            ``vision_cfg``, ``text_cfg``, ...), e.g. a tiny model for tests.
        dense: Last-block variant of the dense image path (see
            :mod:`flowclas_ros.model.vl4ad.clip_dense`): ``maskclip`` or ``value_only``.
        input_size: (height, width) the image is resized to for CLIP (multiples
            of the patch size). ``None``: the model input size rounded to the
            nearest multiple of the patch size.
        prompt_set: Name (``planetary_rover``) or path of a prompt YAML; used
            only when ``prompts`` is empty. Kept for provenance.
        prompts: The prompt set itself. Filled from ``prompt_set`` when the
            scorer is built, so a saved checkpoint is self-contained.
    """

    model: str = "ViT-B-16"
    weights: Literal["hub", "file", "none"] = "hub"
    pretrained: str = "laion2b_s34b_b88k"
    weights_file: str = ""
    weights_sha256: str = ""
    arch: dict[str, Any] = field(default_factory=dict)
    dense: Literal["maskclip", "value_only"] = "maskclip"
    input_size: tuple[int, int] | None = None
    prompt_set: str = ""
    prompts: PromptSet | None = None
