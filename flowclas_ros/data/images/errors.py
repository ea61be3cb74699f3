"""Error type and size limits shared by the raw and compressed image codecs."""

from __future__ import annotations

import numpy as np

MAX_SIDE = 16384
"""Default largest accepted width or height (a guard against corrupt headers)."""
MAX_PIXELS = 100_000_000
"""Default largest accepted width*height (100 MP)."""


class ImageDecodeError(ValueError):
    """A frame could not be decoded; the message says which field is wrong and why."""


def check_size(what: str, height: object, width: object, max_side: int, max_pixels: int) -> None:
    """Raise :class:`ImageDecodeError` unless ``height`` x ``width`` is a sane image size.

    Args:
        what: Encoding or format name, used in the message.
        height: Rows, as found in the message.
        width: Columns, as found in the message.
        max_side: Largest accepted width or height.
        max_pixels: Largest accepted width*height.
    """
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ImageDecodeError(f"{what}: {name} must be an int, got {value!r}")
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"{what}: zero-size image {width}x{height} (width x height)")
    if height > max_side or width > max_side or height * width > max_pixels:
        raise ImageDecodeError(
            f"{what}: absurd image size {width}x{height} (limits: {max_side} per side, {max_pixels} pixels)"
        )
