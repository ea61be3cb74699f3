"""SAM2 refinement of score maps (``--refine sam2``): SAM2 automatic masks + the authors' modal-bin rule.

The masks come from the PyPI ``sam2`` package (optional extra ``flowclas_ros[sam2]``)
with a checkpoint the user supplies; the rule itself is :func:`.mask_refine.refine_with_masks`.
Generator settings are the authors' (``flowclas_module.py``: ``points_per_side=32``,
``points_per_batch=128``, every other ``SAM2AutomaticMaskGenerator`` default: predicted-IoU
0.8, stability 0.95, box NMS 0.7, one crop layer, no small-region clean-up); their batched copy
of the generator computes the same masks, in the same order (NMS order, best predicted IoU
first), for a single image. SAM2 sees the original RGB image (its own resize to 1024² and
ImageNet normalisation) and returns masks at the image's resolution, where the score map lives.

Loading never runs pickled code: the checkpoint is read with ``torch.load(weights_only=True)``,
and the model is built only from a config that ships inside the ``sam2`` package (a Hydra
config names Python classes to instantiate, so a user-supplied YAML could run code).
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.runtime.mask_refine import NUM_BINS, refine_with_masks

AUTHORS_GENERATOR = {"points_per_side": 32, "points_per_batch": 128}
"""The authors' ``SAM2AutomaticMaskGenerator`` arguments (the rest are the package defaults)."""

GENERATOR_OPTIONS = {
    "points_per_side": int,
    "points_per_batch": int,
    "pred_iou_thresh": float,
    "stability_score_thresh": float,
    "box_nms_thresh": float,
    "min_mask_region_area": int,
}
"""``SAM2AutomaticMaskGenerator`` arguments a user may set (``--sam2-option NAME=VALUE``)."""

INSTALL_HINT = "pip install 'flowclas_ros[sam2]' (or pip install sam2==1.1.0)"


class Sam2Error(ValueError):
    """SAM2 refinement cannot be set up (the message names the file / config and the problem)."""


def parse_generator_options(items: list[str]) -> dict[str, Any]:
    """``["points_per_side=16", ...]`` -> ``{"points_per_side": 16, ...}`` (names in GENERATOR_OPTIONS).

    Raises:
        Sam2Error: Not NAME=VALUE, an unknown name, or a value of the wrong type.
    """
    options: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in GENERATOR_OPTIONS:
            raise Sam2Error(
                f"--sam2-option {item!r}: expected NAME=VALUE with NAME one of {', '.join(GENERATOR_OPTIONS)}"
            )
        kind = GENERATOR_OPTIONS[name]
        try:
            options[name] = kind(value)
        except ValueError as err:
            raise Sam2Error(
                f"--sam2-option {item!r}: {name} needs a{'n integer' if kind is int else ' number'}"
            ) from err
    return options


def _import_sam2() -> Any:
    try:
        import sam2  # noqa: F401
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2
    except ImportError as err:
        raise ImportError(f"--refine sam2 needs the sam2 package: {INSTALL_HINT} ({err})") from err
    return build_sam2, SAM2AutomaticMaskGenerator


def packaged_configs() -> list[str]:
    """Config names shipped in the installed ``sam2`` package, e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``."""
    _import_sam2()
    root = resources.files("sam2")
    names = []
    for family in ("sam2", "sam2.1"):
        folder = root / "configs" / family
        if folder.is_dir():
            names += [f"configs/{family}/{p.name}" for p in folder.iterdir() if p.name.endswith(".yaml")]
    return sorted(names)


def build_sam2_model(config: str, device: str = "cpu") -> Any:
    """A randomly initialised SAM2 model from a packaged config, in eval mode.

    Raises:
        Sam2Error: ``config`` is not a packaged config name (the message lists them).
    """
    build_sam2, _ = _import_sam2()
    names = packaged_configs()
    if config not in names:
        raise Sam2Error(
            f"--sam2-config {config!r} is not a config of the sam2 package; use one of: {', '.join(names)}"
        )
    return build_sam2(config, ckpt_path=None, device=device)


def load_sam2_weights(model: Any, checkpoint: str | Path, config: str) -> None:
    """Loads a SAM2 checkpoint (``{"model": state_dict}``) into ``model``, strictly.

    Raises:
        Sam2Error: Missing or unreadable file, not a SAM2 checkpoint, or keys/shapes that do
            not match ``config`` (the message counts them and names the first few).
    """
    from flowclas_ros.model.weights import WeightsFileError, read_state_dict

    path = Path(checkpoint)
    if not path.is_file():
        raise Sam2Error(f"--sam2-checkpoint {path} does not exist")
    try:
        state = read_state_dict(path, ("model",), require_wrapper=True, what="SAM2 checkpoint")
    except WeightsFileError as err:
        raise Sam2Error(f"--sam2-checkpoint {path}: not a loadable SAM2 checkpoint ({err.reason})") from err
    from flowclas_ros.model.state_keys import describe_mismatch

    problem = describe_mismatch(model.state_dict(), state, limit=3)
    if problem:
        raise Sam2Error(f"--sam2-checkpoint {path} does not match --sam2-config {config}: {problem}")
    model.load_state_dict(state, strict=True)


class Sam2Refiner:
    """SAM2 automatic masks of an image, then the modal-bin rule on its score map.

    Args:
        model: A SAM2 model (``SAM2Base``), e.g. from :meth:`from_files`.
        num_bins: Histogram bins per mask (authors: 20).
        **generator_options: ``SAM2AutomaticMaskGenerator`` arguments over the authors' ones.
    """

    def __init__(self, model: Any, num_bins: int = NUM_BINS, **generator_options: Any) -> None:
        _, generator_cls = _import_sam2()
        self.num_bins = num_bins
        self.generator = generator_cls(model, **{**AUTHORS_GENERATOR, **generator_options})
        self.last_refine_ms = 0.0

    @classmethod
    def from_files(
        cls, checkpoint: str | Path | None, config: str | None, device: str = "cpu", **generator_options: Any
    ) -> Sam2Refiner:
        """Builds the model from a packaged config and loads the user's checkpoint.

        Raises:
            ImportError: The sam2 package is not installed (the message says how to install it).
            Sam2Error: A flag is missing, or the file / config is wrong.
        """
        if not checkpoint or not config:
            raise Sam2Error("--refine sam2 needs --sam2-checkpoint F (SAM2 .pt) and --sam2-config NAME")
        _import_sam2()
        if not Path(checkpoint).is_file():
            raise Sam2Error(f"--sam2-checkpoint {checkpoint} does not exist")
        model = build_sam2_model(config, device="cpu")
        load_sam2_weights(model, checkpoint, config)
        return cls(model.to(device).eval(), **generator_options)

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        """SAM2's automatic masks of an (H, W, 3) uint8 RGB image, boolean (H, W), in its output order."""
        records = self.generator.generate(np.ascontiguousarray(image))
        return [np.asarray(r["segmentation"], dtype=bool) for r in records]

    def refine(self, image: np.ndarray, score_map: np.ndarray) -> np.ndarray:
        """The refined float32 score map of ``image`` (same shape as ``score_map``)."""
        start = time.perf_counter()
        refined = refine_with_masks(score_map, self.masks(image), self.num_bins)
        self.last_refine_ms = (time.perf_counter() - start) * 1000.0
        return refined

    def wrap(self, backend: Any) -> RefinedBackend:
        """``backend`` whose predictions are refined (for flowclas-eval and flowclas-predict)."""
        return RefinedBackend(backend, self)


class RefinedBackend:
    """An inference backend whose score maps go through a :class:`Sam2Refiner`.

    Delegates everything else to the wrapped backend. ``image_score`` is recomputed from the
    refined map (``config.score.image_score``); ``model_ms`` stays the model forward's time,
    while a caller timing ``predict`` sees the refinement in its latency.
    """

    def __init__(self, backend: Any, refiner: Sam2Refiner) -> None:
        self.backend = backend
        self.refiner = refiner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def predict(self, images: list[np.ndarray]) -> list[Any]:
        """The wrapped backend's predictions with refined score maps and image scores."""
        from dataclasses import replace

        from flowclas_ros.runtime import base  # its image_score_np: the one predict() itself uses

        kind = self.backend.config.score.image_score
        out = []
        for image, prediction in zip(images, self.backend.predict(images)):
            refined = self.refiner.refine(image, prediction.score_map)
            out.append(replace(prediction, score_map=refined, image_score=base.image_score_np(refined, kind)))
        return out

    def close(self) -> None:
        """Closes the wrapped backend."""
        self.backend.close()

    def __enter__(self) -> RefinedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--refine sam2`` flags, shared by flowclas-predict and flowclas-eval."""
    group = parser.add_argument_group("refinement (optional extra: pip install 'flowclas_ros[sam2]')")
    group.add_argument(
        "--refine",
        choices=("none", "sam2"),
        default="none",
        help="sam2: the FlowCLAS authors' post-processing with SAM2 automatic masks (default: %(default)s)",
    )
    group.add_argument("--sam2-checkpoint", metavar="F", help="SAM2 checkpoint (.pt) for --refine sam2")
    group.add_argument(
        "--sam2-config", metavar="NAME", help="SAM2 config name, e.g. configs/sam2.1/sam2.1_hiera_t.yaml"
    )
    group.add_argument(
        "--sam2-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="mask-generator setting over the authors' (points_per_side=32, points_per_batch=128, "
        "pred_iou_thresh=0.8, stability_score_thresh=0.95, box_nms_thresh=0.7, min_mask_region_area=0); "
        "repeatable",
    )


def check_refine_args(args: argparse.Namespace) -> str | None:
    """A one-line problem with the refinement flags, or None."""
    if args.refine != "sam2" and (args.sam2_checkpoint or args.sam2_config or args.sam2_option):
        return "--sam2-checkpoint/--sam2-config/--sam2-option only apply to --refine sam2"
    if args.refine == "sam2" and not (args.sam2_checkpoint and args.sam2_config):
        return "--refine sam2 needs --sam2-checkpoint F (a SAM2 .pt) and --sam2-config NAME"
    return None


CPU_SLOW_POINTS = 16
"""Warn from this ``points_per_side`` up on a CPU: the authors' 32x32 grid took 793 s for one 640x480
image with SAM2.1 Hiera-T on 2 busy cores (the encoder alone 17 s; the rest: 3072 full-size candidates)."""


def refiner_from_args(args: argparse.Namespace, prog: str) -> Sam2Refiner | None:
    """The refiner the flags ask for (None for ``--refine none``); loads SAM2 on ``args.device``."""
    if args.refine != "sam2":
        return None
    options = parse_generator_options(args.sam2_option)
    refiner = Sam2Refiner.from_files(args.sam2_checkpoint, args.sam2_config, device=args.device, **options)
    points = options.get("points_per_side", AUTHORS_GENERATOR["points_per_side"])
    if str(args.device).startswith("cpu") and points >= CPU_SLOW_POINTS:
        print(
            f"{prog}: warning: SAM2 with {points}x{points} points on the CPU takes minutes per image; "
            "--sam2-option points_per_side=8 is ~16x fewer prompts (or use --device cuda)",
            file=sys.stderr,
        )
    return refiner
