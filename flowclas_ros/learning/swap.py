"""Building and warming a replacement backend for a serving node (no ROS).

The node calls :func:`build_backend` off its executor thread; only the finished, warmed backend
is handed to the inference thread (:mod:`flowclas_ros.ros.model_swap`), so no frame is ever
answered by a half-loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.learning.history import model_identity
from flowclas_ros.runtime.base import InferenceBackend, create_backend

EXPORTING_KINDS = ("onnxruntime", "openvino")
"""Backends that run an ONNX export: a checkpoint directory is exported (in a child process) first."""


@dataclass(frozen=True)
class BackendRecipe:
    """How the node builds its backend (the configure-time parameters that shape it)."""

    kind: str
    device: str
    options: dict[str, Any]
    input_size: tuple[int, int] | None  # the node's override for the torch backend, else None
    prompt_set: str = ""


@dataclass
class BuiltModel:
    """A loaded, warmed backend and where it came from."""

    backend: InferenceBackend
    path: Path
    identity: str


def _cuda_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def check_buildable(recipe: BackendRecipe, path: Path) -> None:
    """Raises a one-line error where the node cannot build ``path`` at all (before any work).

    Raises:
        ValueError: A TensorRT node given a checkpoint directory without a GPU to build its engine.
    """
    if recipe.kind == "tensorrt" and path.is_dir() and not _cuda_present():
        raise ValueError(
            f"this node runs TensorRT and cannot build an engine for {path} without a CUDA GPU; "
            "build it where a GPU is (flowclas-export --format tensorrt) and load the engine file"
        )


def build_backend(recipe: BackendRecipe, path: str | Path, cache_dir: Path | None) -> BuiltModel:
    """Loads ``path`` as the node's backend would, warms it and checks its output is finite.

    Args:
        recipe: The node's backend kind, device and options.
        path: Checkpoint directory or exported model.
        cache_dir: Where exports of a checkpoint go (inside learn_dir) for ONNX Runtime / OpenVINO.

    Raises:
        Exception: Missing, corrupt or mismatched model, or NaN/inf output (one line via ``one_line``).
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint directory or model file")
    check_buildable(recipe, path)
    identity = model_identity(path)
    options = dict(recipe.options)
    if recipe.kind in EXPORTING_KINDS and cache_dir is not None:
        options["cache_dir"] = cache_dir
    backend = create_backend(recipe.kind, path, recipe.device, **options)
    try:
        if recipe.kind == "torch" and recipe.input_size is not None:
            backend.config.preprocess.resize_to(recipe.input_size)
        if recipe.prompt_set:
            if not backend.supports_prompts:
                raise ValueError(f"prompt_set {recipe.prompt_set!r}: this model cannot switch prompts")
            backend.set_prompts(recipe.prompt_set)
        warm_up(backend)
    except BaseException:
        backend.close()
        raise
    return BuiltModel(backend, path, identity)


def warm_up(backend: InferenceBackend, runs: int = 2) -> None:
    """Runs ``runs`` forwards on a textured frame (first-call allocations happen here, not on a camera frame).

    Raises:
        ValueError: The model's output contains NaN or inf.
    """
    height, width = backend.config.preprocess.input_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (int(height), int(width), 3), dtype=np.uint8)
    for _ in range(runs):
        (prediction,) = backend.predict([image])
        if not (np.isfinite(prediction.score_map).all() and np.isfinite(prediction.image_score)):
            raise ValueError("the model's output contains NaN or inf; not swapped in")
