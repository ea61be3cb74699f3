"""Conversion between ``sensor_msgs/Image`` fields and numpy arrays, without cv_bridge.

This module is the public face of the codec: it also re-exports the encoders
(:mod:`.image_encode`) and the CompressedImage functions (:mod:`.image_compressed`).

Used by the ROS node (rclpy messages) and by bag evaluation (rosbags messages),
so every function takes plain message fields, never a message object.

Decoding is zero-copy where possible: the message buffer is viewed with the
row stride (``step``) as a strided numpy array and handed to ``cv2.cvtColor``,
which honours the stride, so row padding costs nothing.

Conventions (documented choices):
    * ``8UC3`` is treated as BGR and ``8UC4`` as BGRA, like cv_bridge.
    * 16-bit colour/mono images are mapped to 8 bit by the fixed full-range
      map ``round(v * 255 / 65535)`` (cv_bridge's 16->8 scale). No per-image
      contrast stretch, so a pixel's value never depends on the rest of the
      frame; a 12-bit sensor therefore looks dark (max 16).
    * ``32FC1`` given to :func:`decode_image` must hold intensities in [0, 1];
      it is mapped to ``round(v * 255)`` and NaN/inf is an error. Depth and
      other metric float images go through :func:`decode_float` instead.
    * ``yuv422``/``uyvy`` is UYVY and ``yuv422_yuy2``/``yuyv`` is YUY2 (YUYV),
      as in ``sensor_msgs/image_encodings.hpp``; colour maths is OpenCV's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from flowclas_ros.data.images.compressed import (
    compressed_format_string,
    decode_compressed,
    decode_compressed_mono8,
    encode_compressed,
)
from flowclas_ros.data.images.encode import encode_float32, encode_image, encode_mono8
from flowclas_ros.data.images.errors import MAX_PIXELS, MAX_SIDE, ImageDecodeError, check_size

__all__ = [
    "COLOR_ENCODINGS",
    "FLOAT_ENCODINGS",
    "MAX_PIXELS",
    "MAX_SIDE",
    "ImageDecodeError",
    "compressed_format_string",
    "decode_compressed",
    "decode_compressed_mono8",
    "decode_float",
    "decode_image",
    "decode_mono8",
    "encode_compressed",
    "encode_float32",
    "encode_image",
    "encode_mono8",
]

Buffer = bytes | bytearray | memoryview | np.ndarray


def _scale16(a: np.ndarray) -> np.ndarray:
    # convertScaleAbs rounds and saturates: round(v * 255 / 65535).
    return cv2.convertScaleAbs(a, alpha=255.0 / 65535.0)


def _float_to_u8(a: np.ndarray) -> np.ndarray:
    if not np.isfinite(a).all():
        raise ImageDecodeError("float image meant for the model contains NaN or inf")
    return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def _cvt(code: int, pre: Callable[[np.ndarray], np.ndarray] | None = None) -> Callable:
    def convert(a: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(pre(a) if pre else a, code)

    return convert


@dataclass(frozen=True)
class _Layout:
    """How one encoding is laid out in memory and converted to RGB."""

    channels: int
    dtype: str  # numpy kind + size without byte order, e.g. "u1", "u2", "f4"
    to_rgb: Callable[[np.ndarray], np.ndarray] | None  # None: already RGB
    even_width: bool = False


# Bayer: OpenCV's legacy names (COLOR_BayerBG2RGB ...) are shifted against the
# ROS names; the explicit RGGB/BGGR/... aliases are correct (checked in tests
# with constructed mosaics). Legacy names are the fallback for older OpenCV.
def _bayer(ros: str, legacy: str) -> int:
    return getattr(cv2, f"COLOR_Bayer{ros}2RGB", getattr(cv2, f"COLOR_Bayer{legacy}2RGB"))


COLOR_ENCODINGS: dict[str, _Layout] = {
    "rgb8": _Layout(3, "u1", None),
    "bgr8": _Layout(3, "u1", _cvt(cv2.COLOR_BGR2RGB)),
    "8UC3": _Layout(3, "u1", _cvt(cv2.COLOR_BGR2RGB)),
    "rgba8": _Layout(4, "u1", _cvt(cv2.COLOR_RGBA2RGB)),
    "bgra8": _Layout(4, "u1", _cvt(cv2.COLOR_BGRA2RGB)),
    "8UC4": _Layout(4, "u1", _cvt(cv2.COLOR_BGRA2RGB)),
    "mono8": _Layout(1, "u1", _cvt(cv2.COLOR_GRAY2RGB)),
    "8UC1": _Layout(1, "u1", _cvt(cv2.COLOR_GRAY2RGB)),
    "mono16": _Layout(1, "u2", _cvt(cv2.COLOR_GRAY2RGB, _scale16)),
    "rgb16": _Layout(3, "u2", _scale16),
    "bgr16": _Layout(3, "u2", _cvt(cv2.COLOR_BGR2RGB, _scale16)),
    "rgba16": _Layout(4, "u2", _cvt(cv2.COLOR_RGBA2RGB, _scale16)),
    "bgra16": _Layout(4, "u2", _cvt(cv2.COLOR_BGRA2RGB, _scale16)),
    "bayer_rggb8": _Layout(1, "u1", _cvt(_bayer("RGGB", "BG"))),
    "bayer_bggr8": _Layout(1, "u1", _cvt(_bayer("BGGR", "RG"))),
    "bayer_gbrg8": _Layout(1, "u1", _cvt(_bayer("GBRG", "GR"))),
    "bayer_grbg8": _Layout(1, "u1", _cvt(_bayer("GRBG", "GB"))),
    "yuv422": _Layout(2, "u1", _cvt(cv2.COLOR_YUV2RGB_UYVY), even_width=True),
    "uyvy": _Layout(2, "u1", _cvt(cv2.COLOR_YUV2RGB_UYVY), even_width=True),
    "yuv422_yuy2": _Layout(2, "u1", _cvt(cv2.COLOR_YUV2RGB_YUY2), even_width=True),
    "yuyv": _Layout(2, "u1", _cvt(cv2.COLOR_YUV2RGB_YUY2), even_width=True),
    "32FC1": _Layout(1, "f4", lambda a: cv2.cvtColor(_float_to_u8(a), cv2.COLOR_GRAY2RGB)),
}
"""Encodings :func:`decode_image` accepts (all give HxWx3 uint8 RGB)."""

FLOAT_ENCODINGS: dict[str, str] = {"32FC1": "f4", "64FC1": "f8", "16UC1": "u2", "mono16": "u2"}
"""Single-channel encodings :func:`decode_float` accepts, with their dtype."""


def _as_bytes_view(data: Buffer) -> memoryview:
    """A flat byte view of ``data`` without copying where possible."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
    try:
        view = memoryview(data)
    except TypeError:  # e.g. a list of ints from a hand-built message
        try:
            view = memoryview(np.asarray(data, dtype=np.uint8))
        except (TypeError, ValueError, OverflowError) as err:
            raise ImageDecodeError(f"image data of type {type(data).__name__} is not a byte buffer") from err
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _strided_view(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: Buffer,
    channels: int,
    dtype: str,
    is_bigendian: int,
    max_side: int,
    max_pixels: int,
) -> np.ndarray:
    """View the message buffer as (H, W, C) honouring ``step``; validates every field."""
    check_size(encoding, height, width, max_side, max_pixels)
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
        raise ImageDecodeError(f"{encoding}: step must be an int, got {step!r}")
    dt = np.dtype(dtype).newbyteorder(">" if is_bigendian and dtype[1] != "1" else "<")
    row_bytes = width * channels * dt.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding}: step {step} is smaller than width*bytes_per_pixel = "
            f"{width}*{channels * dt.itemsize} = {row_bytes}"
        )
    if step % dt.itemsize:
        raise ImageDecodeError(f"{encoding}: step {step} is not a multiple of the sample size {dt.itemsize}")
    buf = _as_bytes_view(data)
    if len(buf) < step * height:
        raise ImageDecodeError(
            f"{encoding}: truncated data, {len(buf)} bytes < step*height = {step}*{height} = {step * height}"
        )
    arr = np.ndarray(
        (height, width, channels), dtype=dt, buffer=buf, strides=(step, channels * dt.itemsize, dt.itemsize)
    )
    if not dt.isnative:
        arr = arr.astype(dt.newbyteorder("="))  # OpenCV needs native byte order
    return arr[:, :, 0] if channels == 1 else arr


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: Buffer,
    is_bigendian: int = 0,
    *,
    copy: bool = False,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a raw ``sensor_msgs/Image`` to an HxWx3 uint8 RGB array.

    Args:
        encoding: One of :data:`COLOR_ENCODINGS`.
        height: Rows.
        width: Columns.
        step: Bytes per row (may include padding).
        data: The message's data buffer (bytes, memoryview, array.array, ndarray).
        is_bigendian: Byte order of multi-byte samples.
        copy: Always return a writable array that owns its memory. Otherwise an
            ``rgb8`` input without row padding is returned as a (possibly
            read-only) view of ``data``.
        max_side: Largest accepted width or height.
        max_pixels: Largest accepted width*height.

    Returns:
        (height, width, 3) uint8, RGB, C-contiguous.

    Raises:
        ImageDecodeError: Unknown encoding, bad geometry, truncated data, odd
            width for YUV 4:2:2, NaN in a 32FC1 intensity image.
    """
    layout = COLOR_ENCODINGS.get(encoding)
    if layout is None:
        hint = " (use decode_float for depth/metric images)" if encoding in FLOAT_ENCODINGS else ""
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}{hint}; supported: {', '.join(COLOR_ENCODINGS)}"
        )
    arr = _strided_view(
        encoding, height, width, step, data, layout.channels, layout.dtype, is_bigendian, max_side, max_pixels
    )
    if layout.even_width and width % 2:
        raise ImageDecodeError(f"{encoding}: width {width} must be even for YUV 4:2:2")
    try:
        rgb = arr if layout.to_rgb is None else layout.to_rgb(arr)
    except cv2.error as err:  # safety net: report OpenCV's complaint as a decode error
        raise ImageDecodeError(
            f"{encoding}: OpenCV could not convert a {width}x{height} image: {err}"
        ) from err
    if copy and (not rgb.flags.owndata or not rgb.flags.writeable):
        return rgb.copy()
    return np.ascontiguousarray(rgb)


def decode_float(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: Buffer,
    is_bigendian: int = 0,
    *,
    allow_nan: bool = True,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a single-channel numeric image (depth, score map) to float32 HxW.

    Values are returned unscaled (``16UC1`` depth in mm stays in mm).

    Args:
        encoding: One of :data:`FLOAT_ENCODINGS`.
        height: Rows.
        width: Columns.
        step: Bytes per row.
        data: The message's data buffer.
        is_bigendian: Byte order of the samples.
        allow_nan: If False, NaN or inf raises :class:`ImageDecodeError`.
        max_side: Largest accepted width or height.
        max_pixels: Largest accepted width*height.

    Returns:
        (height, width) float32, a new array.
    """
    dtype = FLOAT_ENCODINGS.get(encoding)
    if dtype is None:
        raise ImageDecodeError(
            f"unsupported float image encoding {encoding!r}; supported: {', '.join(FLOAT_ENCODINGS)}"
        )
    arr = _strided_view(encoding, height, width, step, data, 1, dtype, is_bigendian, max_side, max_pixels)
    out = arr.astype(np.float32)
    if not allow_nan and not np.isfinite(out).all():
        raise ImageDecodeError(f"{encoding}: image contains NaN or inf")
    return out


def decode_mono8(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: Buffer,
    *,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a ``mono8``/``8UC1`` label image (e.g. an anomaly mask) to HxW uint8, values untouched."""
    if encoding not in ("mono8", "8UC1"):
        raise ImageDecodeError(f"label image must be mono8 or 8UC1, got {encoding!r}")
    return _strided_view(encoding, height, width, step, data, 1, "u1", 0, max_side, max_pixels).copy()
