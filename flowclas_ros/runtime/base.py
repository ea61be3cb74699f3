"""The inference-backend interface shared by torch, ONNX Runtime, OpenVINO and TensorRT, and its registry."""

from __future__ import annotations

import abc
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.data.images.transforms import resize_score_map, to_model_input
from flowclas_ros.model.config import ModelConfig
from flowclas_ros.model.flowclas.image_score import image_score_np
from flowclas_ros.runtime.registry import FactoryView, register_backend, spec

__all__ = ["BACKENDS", "InferenceBackend", "Prediction", "create_backend", "register_backend"]


@dataclass
class Prediction:
    """One image's result.

    Attributes:
        score_map: (H, W) float32 anomaly scores at the original image resolution.
        image_score: Image-level score (``config.score.image_score`` of the map).
        model_ms: Model forward time of the batch divided by the batch size.
    """

    score_map: np.ndarray
    image_score: float
    model_ms: float


class InferenceBackend(abc.ABC):
    """Runs a FlowCLAS checkpoint on images; subclasses implement ``_forward``.

    Attributes:
        name: Backend kind, e.g. ``torch``.
        config: The checkpoint's model config.
        threshold: Calibrated pixel threshold from the checkpoint, or None.
        image_threshold: Calibrated image-score threshold from the checkpoint, or None
            (checkpoints from before it was calibrated).
        device: Device string, e.g. ``cpu`` or ``cuda:0``.
    """

    name: str = "base"
    precision_reason: str | None = None
    """Why this precision runs (``auto``'s choice, e.g. OpenVINO's), for logs and /diagnostics."""

    def __init__(
        self, config: ModelConfig, threshold: float | None, device: str, image_threshold: float | None = None
    ):
        self.config = config
        self.threshold = threshold
        self.image_threshold = image_threshold
        self.device = device

    @abc.abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """Maps a normalised (B, 3, h, w) float32 batch to (B, h, w) float32 score maps."""

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """Scores HxWx3 uint8 RGB images of any sizes.

        Images are resized to ``config.preprocess.input_size``, scored in one
        batch, and each score map is resized back to its image's size. With
        ``preprocess.resize: false`` each image is scored at its own size.
        """
        if not self.config.preprocess.resize and len(images) > 1:
            return [prediction for image in images for prediction in self.predict([image])]
        batch = to_model_input(images, self.config.preprocess)
        start = time.perf_counter()
        scores = np.asarray(self._forward(batch), dtype=np.float32)
        model_ms = (time.perf_counter() - start) * 1000.0 / len(images)
        kind = self.config.score.image_score
        predictions = []
        for image, score in zip(images, scores):
            score_map = resize_score_map(score, image.shape[:2])
            predictions.append(Prediction(score_map, image_score_np(score_map, kind), model_ms))
        return predictions

    def describe(self) -> str:
        """What runs, in one line for logs and diagnostics, e.g. ``onnxruntime on cpu``."""
        return f"{self.name} on {self.device}"

    @property
    def supports_prompts(self) -> bool:
        """Whether :meth:`set_prompts` can switch the VL4AD prompt set live."""
        return False

    def set_prompts(self, prompts: str) -> bool:
        """Switches the VL4AD prompt set (name or YAML path); True when the text was re-encoded.

        Raises:
            ValueError: This backend baked the prompts in at export (ONNX / TensorRT),
                or the model has no text scorer.
        """
        raise ValueError(
            f"the {self.name} backend bakes the prompt set in at export: re-export, or use the torch backend"
        )

    def close(self) -> None:
        """Releases the model / session memory. The backend is unusable afterwards."""
        return None  # nothing to free in the base class; subclasses override

    def __enter__(self) -> InferenceBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BackendFactory = Callable[..., InferenceBackend]

BACKENDS = FactoryView()
"""Backend kind -> factory, or ``"module:attribute"`` imported on first use (keeps imports lazy).

A view of the backend table :data:`flowclas_ros.runtime.registry.TABLE`, which also holds each
backend's precisions, requirements and options. A factory is called as
``factory(checkpoint, device=device, **opts)``.
"""


def create_backend(kind: str, checkpoint: str | Path, device: str = "cpu", **opts: Any) -> InferenceBackend:
    """Creates a registered backend for a checkpoint.

    Args:
        kind: A row of the backend table (:mod:`flowclas_ros.runtime.registry`): ``torch``,
            ``onnxruntime``, ``openvino``, ``tensorrt``, or one added with :func:`register_backend`.
        checkpoint: Checkpoint directory (or the file the backend kind expects).
        device: ``cpu``, ``cuda``, ``cuda:N``.
        **opts: Backend-specific options.

    Raises:
        ValueError: Unknown kind.
        ImportError: The backend's module (or its runtime library) cannot be imported.
    """
    factory = spec(kind).factory  # ValueError: unknown kind, lists the registered ones
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ImportError(
                f"backend {kind!r} is not available: cannot import {module_name}.{attribute} ({exc})"
            ) from exc
    return factory(checkpoint, device=device, **opts)
