"""Typed training configuration (``flowclas-train --config FILE.yaml``).

Loaded strictly with :mod:`flowclas_ros.config_io`: unknown keys are errors.
The model part (``model:``) is the :class:`ModelConfig` that ends up in the
checkpoint; the Outlier Exposure part (``oe:``) is the data layer's
:class:`OEConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowclas_ros.data.outlier_exposure import OEConfig
from flowclas_ros.model.config import ModelConfig


@dataclass
class GenerateConfig:
    """Embedded synthetic dataset, written to ``data.root`` when that folder is missing (demo, tests).

    Attributes:
        enabled: Generate ``data.root/{train,val,test}`` if ``data.root/train`` does not exist.
        seed: Dataset seed (same seed, same bytes).
        n_train: Normal training frames.
        n_val: Validation frames (with foreign-object anomalies and masks).
        n_test: Test frames (idem; not used by training).
        size: Frame (height, width).
    """

    enabled: bool = False
    seed: int = 0
    n_train: int = 200
    n_val: int = 40
    n_test: int = 60
    size: tuple[int, int] = (224, 224)


@dataclass
class DataConfig:
    """Where the images are.

    Folders use the DESIGN.md layout ``ROOT/images/<stem>.png|jpg`` (+ optional
    ``ROOT/masks/<stem>.png``) unless ``layout`` is ``mvtec``.

    Attributes:
        root: Optional base folder; relative ``train`` / ``val`` / ``test`` paths
            are resolved against it (and the generator writes into it).
        layout: ``folder`` (DESIGN.md) or ``mvtec`` (MVTec AD category folder:
            ``train/good/*.png``, ``test/<defect>/*.png``,
            ``ground_truth/<defect>/<stem>_mask.png``). With ``mvtec``,
            ``train`` is the category folder and ``test`` may name it too.
        train: Inlier training images (all assumed normal; mask 255 pixels are ignored).
        val: Validation images. Empty: hold out ``val_fraction`` of the training images.
        val_fraction: Share of training images held out when ``val`` is empty.
        val_anomalies: ``masks``: use the val masks (real anomalies); ``oe``:
            paste Outlier Exposure objects into val images (fixed per seed);
            ``auto``: masks when every val image has one and some mark anomalies.
        val_max_images: Use at most this many val images (0 = all).
        test: Test roots (informational: provenance and benchmarks/gaussian_baseline.py).
        label_map: Raw mask id -> {0, 1, 255} for val/test masks, e.g. ALLO ``{8: 1, 255: 255}``.
        default_label: Output id for raw mask ids not in ``label_map`` (None keeps them).
        hflip: Random horizontal flips of training images.
        generate: Embedded synthetic dataset generation (demo).
    """

    root: str = ""
    layout: Literal["folder", "mvtec"] = "folder"
    train: str = "train"
    val: str = ""
    val_fraction: float = 0.1
    val_anomalies: Literal["auto", "masks", "oe"] = "auto"
    val_max_images: int = 0
    test: list[str] = field(default_factory=list)
    label_map: dict[str, int] = field(default_factory=dict)
    default_label: int | None = None
    hflip: bool = True
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.val_max_images < 0:
            raise ValueError(f"val_max_images must be >= 0, got {self.val_max_images}")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay.

    Weight decay applies to the projection head's conv weight only: norms,
    biases, the flow and the base distribution are excluded (as in FlowCLAS).

    Attributes:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay of the decayed group.
        betas: Adam betas.
        warmup_steps: Linear warmup length (steps).
        min_lr_ratio: Cosine floor as a fraction of ``lr``.
        grad_clip: Max global gradient norm (0 = no clipping).
    """

    lr: float = 2e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0; weight_decay, warmup_steps and grad_clip must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class LossConfig:
    """``L = alpha * NLL + L_con``.

    Attributes:
        alpha: Weight of the NLL (summed over inlier cells of the mixed image;
            unnormalised, hence small; official default 1e-6).
        nll_reduction: ``sum`` (per image, the official scale) or ``mean`` (per cell and channel).
        temperature: SupCon temperature.
        anchors_outlier: Most pasted-outlier cells of the mixed images used as anchors (whole batch).
        anchors_inlier: Most inlier cells of the mixed images used as anchors.
        contrast_outlier: Most object cells of the standalone outlier images added to the contrast set.
        contrast_inlier: Most non-object cells of the standalone outlier images added to the contrast set.
    """

    alpha: float = 1e-6
    nll_reduction: Literal["sum", "mean"] = "sum"
    temperature: float = 0.1
    anchors_outlier: int = 512
    anchors_inlier: int = 512
    contrast_outlier: int = 512
    contrast_inlier: int = 512

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.temperature <= 0:
            raise ValueError("alpha must be >= 0 and temperature > 0")
        counts = (self.anchors_outlier, self.anchors_inlier, self.contrast_outlier, self.contrast_inlier)
        if min(counts) < 0:
            raise ValueError("anchor / contrast counts must be >= 0")


@dataclass
class CacheConfig:
    """Backbone feature caching (small datasets; the backbone is the costly part on CPU).

    OE changes the image every step, so the cache holds a fixed pool: for each
    training image, ``pool_size`` OE variants (mixed image + standalone outlier
    image) are generated once and their features stored. Epoch ``e`` uses
    variant ``e % pool_size`` of every image, so all variants are seen every
    ``pool_size`` epochs. Fewer distinct anomalies than on-the-fly OE, in
    exchange for skipping the backbone during training.

    Attributes:
        mode: ``none`` (features computed every step) or ``pool``.
        pool_size: OE variants per training image (``pool`` mode).
        dtype: Storage type of cached features (``float16`` halves memory).
        val: Cache the (fixed) validation features after the first validation.
    """

    mode: Literal["none", "pool"] = "none"
    pool_size: int = 4
    dtype: Literal["float16", "float32"] = "float16"
    val: bool = True

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {self.pool_size}")


@dataclass
class TrainConfig:
    """Everything ``flowclas-train`` needs.

    Attributes:
        model: The model (backbone, flow, scoring, preprocessing).
        data: Datasets.
        oe: Outlier Exposure.
        optim: Optimiser and schedule.
        loss: Loss weights and contrastive sampling.
        cache: Feature caching.
        batch_size: Images per step per process.
        steps: Total optimiser steps; 0 = ``epochs`` x steps per epoch.
        epochs: Used when ``steps`` is 0.
        checkpoint_every: Write the resumable training state every N steps.
        val_every: Validate every N steps; 0 = at the end of every epoch.
        target_fpr: Inlier-pixel FPR at which the pixel threshold is calibrated on val. A
            deployment choice: it sets how much of a normal scene the mask may cover
            (0.05 = 5 % of normal pixels); the node's ``threshold`` parameter overrides it.
        image_target_fpr: Share of the normal val images whose image score may reach the
            image threshold (``is_anomalous``); stored as the checkpoint's ``image_threshold``.
        amp: Autocast on CUDA: ``auto`` (bf16 if supported, else fp16), ``bf16``,
            ``fp16`` or ``off``. CPU always runs fp32.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Seed of data order, OE, contrastive sampling and the model init.
        num_workers: DataLoader workers per process.
        threads: torch intra-op CPU threads per process (0 = torch's default). On a
            CPU shared with other jobs, 1 avoids thread oversubscription.
        log_every: Write a CSV / TensorBoard row every N steps.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    oe: OEConfig = field(default_factory=OEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    batch_size: int = 8
    steps: int = 0
    epochs: int = 10
    checkpoint_every: int = 100
    val_every: int = 0
    target_fpr: float = 0.05
    image_target_fpr: float = 0.01
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    device: str = "auto"
    seed: int = 0
    num_workers: int = 2
    threads: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.steps < 0 or self.epochs < 1 and self.steps == 0:
            raise ValueError("set steps > 0 or epochs >= 1")
        if self.checkpoint_every < 1 or self.val_every < 0 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1, val_every >= 0")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in (0, 1), got {self.target_fpr}")
        if not 0.0 <= self.image_target_fpr < 1.0:
            raise ValueError(f"image_target_fpr must be in [0, 1), got {self.image_target_fpr}")
        if self.num_workers < 0 or self.threads < 0:
            raise ValueError("num_workers and threads must be >= 0")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
