"""sensor_msgs <-> numpy for the node, on top of :mod:`flowclas_ros.data.images.codec`.

Outgoing ``data`` fields are assigned as ``array.array('B')``: rclpy's generated
setter copies those in one go, while ``bytes`` or lists are validated element
by element (milliseconds per VGA frame).
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from flowclas_ros.data.images.codec import (
    MAX_PIXELS,
    ImageDecodeError,
    decode_compressed,
    decode_image,
    encode_float32,
    encode_mono8,
)
from flowclas_ros.msg import AnomalyRegion, AnomalyResult
from flowclas_ros.runtime.decision import is_anomalous
from flowclas_ros.runtime.postprocess import Region

__all__ = [
    "ImageDecodeError",
    "float_image_msg",
    "mono8_image_msg",
    "region_msg",
    "result_msg",
    "rgb8_image_msg",
    "to_rgb",
]


def to_rgb(msg: Image | CompressedImage, *, max_side: int) -> np.ndarray:
    """Decodes an Image or CompressedImage to HxWx3 uint8 RGB.

    Raises:
        ImageDecodeError: Malformed frame (wrong step, truncated data, unknown encoding, zero or
            absurd size, undecodable compressed data, NaN in a float image).
    """
    max_pixels = min(MAX_PIXELS, max_side * max_side)
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.format, msg.data, max_side=max_side, max_pixels=max_pixels)
    return decode_image(
        msg.encoding,
        msg.height,
        msg.width,
        msg.step,
        msg.data,
        msg.is_bigendian,
        max_side=max_side,
        max_pixels=max_pixels,
    )


def _image_msg(header: Header, encoding: str, height: int, width: int, step: int, data: bytes) -> Image:
    msg = Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0, step=step)
    msg.data = array.array("B", data)
    return msg


def rgb8_image_msg(header: Header, rgb: np.ndarray) -> Image:
    """An ``rgb8`` Image from an (H, W, 3) uint8 array."""
    height, width = rgb.shape[:2]
    return _image_msg(header, "rgb8", height, width, width * 3, np.ascontiguousarray(rgb).tobytes())


def mono8_image_msg(header: Header, mono: np.ndarray) -> Image:
    """A ``mono8`` Image from an (H, W) uint8 array."""
    step, data = encode_mono8(mono)
    return _image_msg(header, "mono8", mono.shape[0], mono.shape[1], step, data)


def float_image_msg(header: Header, values: np.ndarray) -> Image:
    """A little-endian ``32FC1`` Image from an (H, W) float array."""
    step, data = encode_float32(values)
    return _image_msg(header, "32FC1", values.shape[0], values.shape[1], step, data)


def region_msg(region: Region) -> AnomalyRegion:
    """AnomalyRegion from a :class:`~flowclas_ros.runtime.postprocess.Region`."""
    return AnomalyRegion(
        x_offset=region.x,
        y_offset=region.y,
        width=region.width,
        height=region.height,
        peak_score=region.peak_score,
        mean_score=region.mean_score,
        area=region.area,
    )


def result_msg(
    header: Header,
    *,
    image_score: float,
    threshold: float,
    image_threshold: float,
    anomalous_fraction: float,
    regions: list[Region],
    latency_ms: float,
    backend: str,
    model_ms: float = float("nan"),
) -> AnomalyResult:
    """AnomalyResult; ``is_anomalous`` is ``image_score >= image_threshold`` (the image-level one).

    ``latency_ms`` is receive -> publish of the frame in the node, ``model_ms`` its share of the
    batch forward (NaN when unknown).
    """
    return AnomalyResult(
        header=header,
        image_score=float(image_score),
        threshold=float(threshold),
        is_anomalous=is_anomalous(image_score, image_threshold),
        anomalous_fraction=float(anomalous_fraction),
        regions=[region_msg(region) for region in regions],
        latency_ms=float(latency_ms),
        backend=backend,
        image_threshold=float(image_threshold),
        model_ms=float(model_ms),
    )
