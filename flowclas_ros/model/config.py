"""Typed model configuration. This is what a checkpoint's ``config.json`` holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowclas_ros.model.vl4ad.config import FusionConfig, TextScorerConfig

CONFIG_VERSION = 1
"""Bump when a checkpoint written by an older version can no longer be read."""

DEFAULT_METHOD = "flowclas"
"""``model.method`` of configs and checkpoints that do not name one (all written before the key)."""


@dataclass
class BackboneConfig:
    """The frozen feature extractor.

    Attributes:
        name: timm model name, e.g. ``vit_small_patch14_dinov2`` or
            ``vit_small_patch14_reg4_dinov2``; a timm ResNet/WideResNet name
            (``resnet18``, ``wide_resnet50_2``) selects the CNN (CL-flow) path;
            ``rein_dinov2_vitb14`` / ``rein_dinov2_vitl14`` the FlowCLAS
            authors' Rein-DINOv2 (see ``model/backbones/rein_dinov2.py``).
        weights: ``hub`` (timm / Hugging Face hub, online), ``file`` (a local
            state_dict in timm or official DINOv2 torch-hub key format) or
            ``none`` (random init, for tests only).
        weights_file: Path of the local weights file when ``weights == "file"``.
        weights_sha256: Hash of that file, checked on load when set.
        layers: Feature layers. ViT: block indices (negative counts from the
            end), concatenated. CNN: stage indices, resized to the first and
            concatenated.
        norm: ViT only: pass each selected block through the ViT's final
            LayerNorm, as DINOv2's ``get_intermediate_layers(norm=True)`` does
            (keep this for pretrained weights). ``false`` takes the raw
            residual stream: with a random-init DINOv2 (LayerScale 1e-5) the
            tokens are a random linear projection of the pixel patch, and a
            per-token LayerNorm would discard each patch's contrast and
            brightness (a Gaussian baseline on the demo split drops from AP
            0.46 to 0.16).
        rein_file: ``rein_dinov2_*`` backbones with ``weights: file``: the
            authors' Rein file (``{"state_dict": {"backbone.reins.*": ...}}``);
            ``weights_file`` is then Meta's ``dinov2_vit*14_pretrain.pth``.
        rein_sha256: Hash of ``rein_file``, checked on load when set.
    """

    name: str = "vit_small_patch14_dinov2"
    weights: Literal["hub", "file", "none"] = "hub"
    weights_file: str = ""
    weights_sha256: str = ""
    layers: list[int] = field(default_factory=lambda: [-1])
    norm: bool = True
    rein_file: str = ""
    rein_sha256: str = ""


@dataclass
class FlowConfig:
    """The FrEIA normalizing flow over the (C, H, W) feature map.

    Attributes:
        input_norm: ``layernorm``: a trainable per-cell LayerNorm over channels
            before the flow (suits LayerNormed features such as DINOv2's).
            ``none``: features enter the flow as they are; its first ActNorm
            still standardises each channel from the data, but the per-cell
            scale survives (use with ``backbone.norm: false``).
        variant: ``default``: our flow (``flow.py``). ``official``: the
            FlowCLAS authors' pinned-FrEIA ActNorm, "residual" subnet,
            coupling and base distribution (``flow_official.py``; uses
            ``steps`` and ``clamp``, ignores ``hidden_ratio`` / ``kernel_sizes``).
    """

    variant: Literal["default", "official"] = "default"
    input_norm: Literal["layernorm", "none"] = "layernorm"
    steps: int = 16
    clamp: float = 2.0
    hidden_ratio: float = 1.0
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 1])
    proj_dim: int = 128


@dataclass
class ScoreConfig:
    """How the flow latent becomes a per-pixel anomaly score."""

    kind: Literal["likelihood", "nll"] = "likelihood"
    blur_sigma: float = 0.0
    image_score: Literal["max", "mean", "p99"] = "max"


@dataclass
class PreprocessConfig:
    """Input preprocessing shared by every backend.

    Attributes:
        input_size: (height, width) the image is resized to before the model;
            each side is padded up to a multiple of the patch size internally.
            With ``resize: false`` it only fixes the ONNX / TensorRT export size.
        mean: Per-channel RGB mean, on 0..1 pixels.
        std: Per-channel RGB std.
        resize: ``true``: resize to ``input_size``. ``false``: native
            resolution (the authors' evaluation); the torch backend scores each
            image at its own size.
        padding: ``bottom_right``: zeros (the mean colour) after normalisation
            at the bottom / right. ``symmetric`` (the authors'): 0.0 on 0..1
            pixels, i.e. ``-mean / std`` after normalisation, split evenly
            with the odd pixel bottom / right. Both return maps of exactly the
            input size.
    """

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: bool = True
    padding: Literal["bottom_right", "symmetric"] = "bottom_right"

    def resize_to(self, input_size: tuple[int, int] | list[int]) -> None:
        """Every image is resized to ``input_size`` (height, width) from now on.

        The one rule for overriding a checkpoint's size (an export's fixed size, the node's
        ``input_size`` parameter, a swapped-in model): ``resize`` is set too, so a
        native-resolution (imported) checkpoint's images are resized as well.
        """
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.resize = True


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model for inference.

    ``method`` names the registered method (``model/method.py``; ``flowclas`` by default).
    ``text`` enables the optional VL4AD text-prompted scorer (CLIP); ``fusion``
    says how its score is combined with the method's score (``off`` by default).
    """

    method: str = DEFAULT_METHOD
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    text: TextScorerConfig | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    seed: int = 0
