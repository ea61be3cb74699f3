"""Data types of the bag reader, and decoding of one Image/CompressedImage message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowclas_ros.data.bags.source import IMAGE_TYPE, typestore
from flowclas_ros.data.images.codec import (
    ImageDecodeError,
    decode_compressed,
    decode_compressed_mono8,
    decode_image,
    decode_mono8,
)


class BagReadWarning(UserWarning):
    """The bag is damaged; only part of it was read."""


@dataclass
class BagFrame:
    """One image frame from a bag.

    Attributes:
        index: Position of the image among the image topic's messages (file order, from 0).
        stamp_ns: ``header.stamp`` in nanoseconds.
        frame_id: ``header.frame_id``.
        image: (H, W, 3) uint8 RGB, writable.
        mask: (H, W) uint8 with 0/1/255, or None when no mask was paired.
        mask_match: ``"exact"`` or ``"nearest"`` (by stamp), ``"index"`` (mask_dir by index), or None.
        encoding: The image encoding, or the CompressedImage format string.
    """

    index: int
    stamp_ns: int
    frame_id: str
    image: np.ndarray
    mask: np.ndarray | None
    mask_match: str | None
    encoding: str


@dataclass
class BagReadStats:
    """Counts from one pass over a bag; ``problems`` lists any damage found."""

    n_image_messages: int = 0
    n_frames: int = 0
    n_paired_exact: int = 0
    n_paired_nearest: int = 0
    n_unpaired: int = 0
    n_mask_messages: int = 0
    n_masks_unused: int = 0
    n_decode_errors: int = 0
    n_mask_errors: int = 0
    max_buffered: int = 0
    salvage: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, e.g. for metrics.json."""
        return dict(self.__dict__, problems=list(self.problems))

    def summary(self) -> str:
        """One line for logs and reports."""
        text = (
            f"{self.n_frames}/{self.n_image_messages} frames read, {self.n_paired_exact} exact + "
            f"{self.n_paired_nearest} nearest mask pairs, {self.n_unpaired} unpaired, "
            f"{self.n_decode_errors} undecodable, {self.n_masks_unused} masks unused"
        )
        return text + (f"; DAMAGED BAG: {'; '.join(self.problems)}" if self.problems else "")


def validate_mask(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Return ``mask`` if it matches the image size and holds only 0/1/255, else raise ImageDecodeError."""
    if mask.shape != image.shape[:2]:
        raise ImageDecodeError(f"mask size {mask.shape[::-1]} != image size {image.shape[1::-1]} (w, h)")
    bad = (mask != 0) & (mask != 1) & (mask != 255)
    if bad.any():
        raise ImageDecodeError(f"mask values must be 0/1/255, found {np.unique(mask[bad])[:8].tolist()}")
    return mask


def decode_message(msgtype: str, raw: bytes, *, label: bool) -> tuple[Any, np.ndarray]:
    """Deserialize and decode one Image/CompressedImage; label=True keeps single-channel values."""
    try:
        msg = typestore().deserialize_cdr(raw, msgtype)
    except Exception as err:  # rosbags raises several types on corrupt CDR
        raise ImageDecodeError(f"cannot deserialize {msgtype}: {err}") from err
    if msgtype == IMAGE_TYPE:
        fields = (msg.encoding, msg.height, msg.width, msg.step, msg.data)
        if label:
            return msg, decode_mono8(*fields)
        return msg, decode_image(*fields, msg.is_bigendian, copy=True)
    return msg, (decode_compressed_mono8 if label else decode_compressed)(msg.format, msg.data)
