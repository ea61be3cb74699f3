"""Encoders from numpy to ``sensor_msgs/Image`` data (little-endian), the inverse of ``image_codec``.

Used by flowclas-bag, the node's outputs (masks, score maps) and tests.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

_YUV422 = frozenset({"yuv422", "uyvy", "yuv422_yuy2", "yuyv"})


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image into a Bayer mosaic; ``pattern`` is e.g. "rggb" (row-major 2x2)."""
    out = np.empty(rgb.shape[:2], np.uint8)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return out


def _to16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.uint16) * 257  # exact inverse of the 16->8 map


_ENCODERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rgb8": lambda x: x,
    "bgr8": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGR),
    "8UC3": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGR),
    "rgba8": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2RGBA),
    "bgra8": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGRA),
    "8UC4": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2BGRA),
    "mono8": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY),
    "8UC1": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY),
    "mono16": lambda x: _to16(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)),
    "rgb16": _to16,
    "bgr16": lambda x: _to16(cv2.cvtColor(x, cv2.COLOR_RGB2BGR)),
    "rgba16": lambda x: _to16(cv2.cvtColor(x, cv2.COLOR_RGB2RGBA)),
    "bgra16": lambda x: _to16(cv2.cvtColor(x, cv2.COLOR_RGB2BGRA)),
    "bayer_rggb8": lambda x: _mosaic(x, "rggb"),
    "bayer_bggr8": lambda x: _mosaic(x, "bggr"),
    "bayer_gbrg8": lambda x: _mosaic(x, "gbrg"),
    "bayer_grbg8": lambda x: _mosaic(x, "grbg"),
    "yuv422": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2YUV_UYVY),
    "uyvy": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2YUV_UYVY),
    "yuv422_yuy2": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2YUV_YUYV),
    "yuyv": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2YUV_YUYV),
    "32FC1": lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) / np.float32(255.0),
}


def _rows_to_bytes(arr: np.ndarray, step_padding: int) -> tuple[int, bytes]:
    """Serialise a (H, W[, C]) array little-endian, each row followed by ``step_padding`` zero bytes."""
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    rows = arr.reshape(arr.shape[0], -1).view(np.uint8)
    if step_padding:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], step_padding), np.uint8)], axis=1)
    return rows.shape[1], rows.tobytes()


def encode_image(rgb: np.ndarray, encoding: str, *, step_padding: int = 0) -> tuple[int, bytes]:
    """Encode an HxWx3 uint8 RGB image as ``sensor_msgs/Image`` data (little-endian).

    Args:
        rgb: (H, W, 3) uint8 RGB.
        encoding: Any key of :data:`COLOR_ENCODINGS`.
        step_padding: Extra bytes appended to every row (emulates drivers with
            aligned strides).

    Returns:
        ``(step, data)`` for the message fields.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_image expects an (H, W, 3) uint8 RGB array, got {_describe(rgb)}")
    if encoding not in _ENCODERS:
        raise ValueError(f"cannot encode to {encoding!r}; supported: {', '.join(_ENCODERS)}")
    if encoding in _YUV422 and rgb.shape[1] % 2:
        raise ValueError(f"{encoding} needs an even width, got {rgb.shape[1]}")
    return _rows_to_bytes(_ENCODERS[encoding](np.ascontiguousarray(rgb)), step_padding)


def encode_mono8(image: np.ndarray) -> tuple[int, bytes]:
    """Encode an HxW uint8 array (mask, label image) as ``mono8`` data; returns ``(step, data)``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"encode_mono8 expects an (H, W) uint8 array, got {_describe(image)}")
    return _rows_to_bytes(image, 0)


def encode_float32(image: np.ndarray) -> tuple[int, bytes]:
    """Encode an HxW float array (score map) as little-endian ``32FC1`` data; returns ``(step, data)``."""
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype.kind not in "fiu":
        raise ValueError(f"encode_float32 expects an (H, W) numeric array, got {_describe(image)}")
    return _rows_to_bytes(image.astype(np.float32, copy=False), 0)


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"shape {x.shape} dtype {x.dtype}"
    return type(x).__name__
