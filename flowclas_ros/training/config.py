"""Typed training configuration (``flowclas-train --config FILE.yaml``).

Loaded strictly with :mod:`flowclas_ros.config_io`: unknown keys are errors.
The model part (``model:``) is the :class:`ModelConfig` that ends up in the
checkpoint; the Outlier Exposure part (``oe:``) is the data layer's
:class:`OEConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowclas_ros.data.outliers.exposure import OEConfig
from flowclas_ros.model.config import ModelConfig
from flowclas_ros.model.flowclas.train_config import LossConfig, SegConfig


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
class BagConfig:
    """How the rosbag2 recordings named in ``data.train`` / ``data.val`` become training frames.

    A bag's frames are decoded exactly as the node decodes them (``data/images/codec.py``) and
    then take the folder images' path (resize or crop, OE, normalisation).

    Attributes:
        image_topic: The ``sensor_msgs/Image`` (any encoding the node reads) or
            ``sensor_msgs/CompressedImage`` topic. Empty: the bag's only image topic; a bag
            with more than one image topic needs it.
        max_rate_hz: Keep at most this many frames per second of recording, by header stamp
            (a frame is kept when it is at least ``1 / max_rate_hz`` after the last kept one);
            the others are never decoded. 0 keeps every frame. Neighbouring frames of a 10-30 Hz
            camera are near-duplicates, so 2 Hz loses little and trains on a wider variety.
        skip_static: Drop a frame nearly identical to the last kept one (the robot stands still).
        static_threshold: A frame is "nearly identical" when the mean absolute difference of
            32x32 grey thumbnails (area-averaged, 0-255 levels) is below this. Measured on
            scikit-image photos at 640x480 (docs/SITE.md): sensor noise (sd 3) gives 0.5, a
            3 % exposure change 1.3-3.1, a 2-pixel pan 1.0-3.6, a 6-pixel pan 2.9-11; so 2.0
            drops a still camera's repeats and keeps any view that moved by more than a few pixels.
            The kept frames are held decoded (H x W x 3 bytes each) in a scratch file in ``TMPDIR``.
    """

    image_topic: str = ""
    max_rate_hz: float = 2.0
    skip_static: bool = True
    static_threshold: float = 2.0

    def __post_init__(self) -> None:
        if self.max_rate_hz < 0 or self.static_threshold < 0:
            raise ValueError("max_rate_hz and static_threshold must be >= 0")


@dataclass
class DataConfig:
    """Where the images are.

    Folders use the docs/ARCHITECTURE.md layout ``ROOT/images/<stem>.png|jpg`` (+ optional
    ``ROOT/masks/<stem>.png``) unless ``layout`` is ``mvtec``.

    Attributes:
        root: Optional base folder; relative ``train`` / ``val`` / ``test`` paths
            are resolved against it (and the generator writes into it).
        layout: ``folder`` (docs/ARCHITECTURE.md), ``mvtec`` (MVTec AD category folder:
            ``train/good/*.png``, ``test/<defect>/*.png``,
            ``ground_truth/<defect>/<stem>_mask.png``; ``train`` is the category
            folder and ``test`` may name it too) or ``cityscapes`` (``train`` is
            the Cityscapes root with ``leftImg8bit/`` and ``gtFine/``; the
            ``gtFine_labelIds`` become 19 train ids for the segmentation head and
            their void pixels are ignored by the flow, as in the official code).
        train_split: Cityscapes split read for training (``layout: cityscapes``).
        train: Inlier training images (all assumed normal; mask 255 pixels are ignored): a
            folder, a rosbag2 (bag directory with ``metadata.yaml``, a ``.db3`` or an ``.mcap``;
            see ``bag``) or a list mixing both.
        val: Validation images, in the same forms. Empty: hold out ``val_fraction`` of each
            training source: the last ``val_fraction`` of each recording's time (never a random
            split: neighbouring frames are near-duplicates), every ``1 / val_fraction``-th image
            of a folder.
        val_fraction: Share of training images held out when ``val`` is empty.
        val_anomalies: ``masks``: use the val masks (real anomalies); ``oe``:
            paste Outlier Exposure objects into val images (fixed per seed);
            ``auto``: masks when every val image has one and some mark anomalies.
        val_max_images: Use at most this many val images (0 = all).
        test: Test roots (informational: provenance and benchmarks/gaussian_baseline.py).
        label_map: Raw mask id -> {0, 1, 255} for val/test masks, e.g. ALLO ``{8: 1, 255: 255}``.
        default_label: Output id for raw mask ids not in ``label_map`` (None keeps them).
        hflip: Random horizontal flips of training images.
        vflip: Random vertical flips of training images (the official ALLO recipe).
        crop: Native-scale random training crops (height, width), or None to
            resize each training image to ``model.preprocess.input_size`` (the
            demo). An image smaller than the crop is first padded to it
            (centred, RGB 0, mask 255), like the official PadIfNeeded step.
        generate: Embedded synthetic dataset generation (demo).
        bag: Reading rosbag2 recordings (topic, rate, static frames).
    """

    root: str = ""
    layout: Literal["folder", "mvtec", "cityscapes"] = "folder"
    train: str | list[str] = "train"
    train_split: str = "train"
    val: str | list[str] | None = ""
    val_fraction: float = 0.1
    val_anomalies: Literal["auto", "masks", "oe"] = "auto"
    val_max_images: int = 0
    test: list[str] = field(default_factory=list)
    label_map: dict[str, int] = field(default_factory=dict)
    default_label: int | None = None
    hflip: bool = True
    vflip: bool = False
    crop: tuple[int, int] | None = None
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    bag: BagConfig = field(default_factory=BagConfig)

    def __post_init__(self) -> None:
        if isinstance(self.train, list) and not self.train:
            raise ValueError("train: the list is empty; name at least one folder or bag")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.val_max_images < 0:
            raise ValueError(f"val_max_images must be >= 0, got {self.val_max_images}")
        if self.crop is not None and min(self.crop) < 1:
            raise ValueError(f"crop must be positive (height, width), got {self.crop}")


@dataclass
class OptimConfig:
    """AdamW with a linear-warmup + cosine schedule, or ``torch.optim.lr_scheduler.OneCycleLR``.

    Attributes:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay of the decayed group.
        decay: Which parameters decay. ``proj_head``: the projection head's
            conv weight only. ``official``: every trainable parameter whose
            name contains none of ``bias`` / ``norm`` / ``flow`` (the official
            ``param_groups``: projection and segmentation head weights, their
            BatchNorm weight and the base distribution decay).
        betas: Adam betas (with ``onecycle`` beta1 is cycled instead).
        schedule: ``warmup_cosine`` (linear warmup over ``warmup_steps``, cosine
            to ``min_lr_ratio``) or ``onecycle`` (OneCycleLR over all steps).
        warmup_steps: Linear warmup length (steps), ``warmup_cosine`` only.
        min_lr_ratio: Cosine floor as a fraction of ``lr``, ``warmup_cosine`` only.
        pct_start: OneCycle: share of the steps spent warming up.
        div_factor: OneCycle: start lr = ``lr / div_factor``.
        final_div_factor: OneCycle: final lr = start lr / ``final_div_factor``.
        base_momentum: OneCycle: lowest beta1 (at the peak lr).
        max_momentum: OneCycle: highest beta1 (at the start and the end).
        warmup_anneal: OneCycle warm-up shape: ``linear`` (the official
            LinearWarmupCosineAnnealingLR) or ``cos`` (plain OneCycleLR); the
            decay is always cosine.
        grad_clip: Max global gradient norm (0 = no clipping).
    """

    lr: float = 2e-4
    weight_decay: float = 1e-4
    decay: Literal["proj_head", "official"] = "proj_head"
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["warmup_cosine", "onecycle"] = "warmup_cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    warmup_anneal: Literal["linear", "cos"] = "linear"
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.pct_start < 1.0 or self.div_factor <= 0 or self.final_div_factor <= 0:
            raise ValueError("pct_start must be in (0, 1); div_factor and final_div_factor > 0")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0; weight_decay, warmup_steps and grad_clip must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


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
        seg: Segmentation head (official Cityscapes recipe).
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
        checkpoint_per_metric: Also keep the best model per metric in
            ``RUN_DIR/checkpoint_best_ap/`` (highest val AP) and
            ``RUN_DIR/checkpoint_best_fpr95/`` (lowest val FPR95), as the official
            two checkpoint monitors do. ``RUN_DIR/checkpoint/`` stays the best AP.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    oe: OEConfig = field(default_factory=OEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seg: SegConfig = field(default_factory=SegConfig)
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
    checkpoint_per_metric: bool = False

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
