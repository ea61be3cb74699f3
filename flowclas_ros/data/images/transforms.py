"""Image preprocessing shared by every inference backend, and score-map resizing (numpy / OpenCV only).

No torch here: the deployment runtime preprocesses without it. Training wraps the
array with ``torch.from_numpy`` (no copy).
"""

from __future__ import annotations

import cv2
import numpy as np

from flowclas_ros.model.config import PreprocessConfig


def check_image(image: np.ndarray, index: int = 0) -> None:
    """Raises ValueError unless ``image`` is an HxWx3 uint8 array."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image {index}: expected an HxWx3 uint8 RGB array, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image {image.shape}")


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resizes an HxWxC image to ``size_hw``: INTER_AREA when shrinking, INTER_LINEAR otherwise."""
    height, width = size_hw
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_model_input(images: list[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """Resizes RGB uint8 images to ``cfg.input_size`` (unless ``cfg.resize`` is off) and normalises them.

    Args:
        images: HxWx3 uint8 RGB arrays of any sizes (one size when ``cfg.resize`` is off).
        cfg: Input size (height, width), mean and std (on 0..1 pixels), resize switch.

    Returns:
        (B, 3, h, w) float32 C-contiguous array, ``(pixel / 255 - mean) / std``.
    """
    if len(images) == 0:
        raise ValueError("to_model_input: no images")
    check_image(images[0])
    size = tuple(cfg.input_size) if cfg.resize else images[0].shape[:2]
    scale = np.asarray(cfg.std, dtype=np.float32) * 255.0
    offset = np.asarray(cfg.mean, dtype=np.float32) * 255.0
    batch = np.empty((len(images), 3, *size), dtype=np.float32)
    for i, image in enumerate(images):
        check_image(image, i)
        if not cfg.resize and image.shape[:2] != size:  # one native size per batch
            raise ValueError(
                f"image {i}: {image.shape[:2]} differs from image 0 {size} (native-resolution batch)"
            )
        resized = resize_image(image, size)
        for c in range(3):  # one channel at a time into the planar batch: no HWC float temporaries
            np.subtract(resized[..., c], offset[c], out=batch[i, c], dtype=np.float32)
            batch[i, c] /= scale[c]
    return batch


def resize_score_map(score: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinearly resizes an (h, w) float score map to ``size_hw`` (half-pixel aligned, like torch)."""
    height, width = int(size_hw[0]), int(size_hw[1])
    score = np.asarray(score, dtype=np.float32)
    if score.shape == (height, width):
        return score
    return cv2.resize(score, (width, height), interpolation=cv2.INTER_LINEAR)
