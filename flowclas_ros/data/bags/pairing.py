"""Pairing image frames with masks by header stamp, and mask folders named by stamp or index."""

from __future__ import annotations

import bisect
import re
import struct
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path

_STAMP_NAME = re.compile(r"^(\d+)_(\d{9})$")


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """``header.stamp`` in ns from a serialized Image/CompressedImage, without full deserialization.

    Both types start with ``std_msgs/Header``, whose stamp (int32 sec, uint32
    nanosec) directly follows the 4-byte CDR encapsulation header.

    Raises:
        ValueError: Too short, or not plain CDR.
    """
    if len(raw) < 12:
        raise ValueError(f"message of {len(raw)} bytes is too short for a header")
    kind = bytes(raw[:2])
    if kind == b"\x00\x01":
        sec, nsec = struct.unpack_from("<iI", raw, 4)
    elif kind == b"\x00\x00":
        sec, nsec = struct.unpack_from(">iI", raw, 4)
    else:
        raise ValueError(f"unsupported CDR encapsulation {kind.hex()}")
    return sec * 1_000_000_000 + nsec


def pair_by_stamp(
    image_stamps: Sequence[int], mask_stamps: Sequence[int], tolerance_ns: int
) -> list[tuple[int | None, str | None]]:
    """Match each image to at most one mask, and each mask to at most one image.

    Exact stamp matches are taken first. The remaining images, in stamp order,
    then take the nearest unused mask within ``tolerance_ns`` (the earlier one
    on a tie). Greedy, so a mask claimed by an earlier image is not
    reconsidered; with a tolerance below half the frame period that never
    matters.

    Returns:
        One ``(mask_index, "exact" | "nearest")`` or ``(None, None)`` per image.
    """
    result: list[tuple[int | None, str | None]] = [(None, None)] * len(image_stamps)
    by_stamp: dict[int, deque[int]] = defaultdict(deque)
    for j, stamp in enumerate(mask_stamps):
        by_stamp[stamp].append(j)
    used = [False] * len(mask_stamps)
    order = sorted(range(len(image_stamps)), key=lambda i: (image_stamps[i], i))
    for i in order:
        if by_stamp.get(image_stamps[i]):
            j = by_stamp[image_stamps[i]].popleft()
            used[j] = True
            result[i] = (j, "exact")
    if tolerance_ns <= 0:
        return result
    sorted_masks = sorted(range(len(mask_stamps)), key=lambda j: (mask_stamps[j], j))
    keys = [mask_stamps[j] for j in sorted_masks]
    for i in order:
        if result[i][0] is not None:
            continue
        stamp = image_stamps[i]
        best: tuple[int, int] | None = None  # (distance, position in sorted_masks)
        pos = bisect.bisect_left(keys, stamp)
        for step in (-1, 1):  # walk outwards over used masks, within the tolerance
            k = pos - 1 if step < 0 else pos
            while 0 <= k < len(keys) and abs(keys[k] - stamp) <= tolerance_ns:
                if not used[sorted_masks[k]]:
                    dist = abs(keys[k] - stamp)
                    if best is None or dist < best[0] or (dist == best[0] and k < best[1]):
                        best = (dist, k)
                    break
                k += step
        if best is not None:
            j = sorted_masks[best[1]]
            used[j] = True
            result[i] = (j, "nearest")
    return result


def stamp_mask_name(stamp_ns: int) -> str:
    """File name of a mask for a frame with this stamp in a ``--mask-dir``: ``<sec>_<nanosec:09d>.png``."""
    return f"{stamp_ns // 1_000_000_000}_{stamp_ns % 1_000_000_000:09d}.png"


def index_mask_name(index: int) -> str:
    """File name of a mask for the frame at this position in the image topic: ``%06d.png``."""
    return f"{index:06d}.png"


def scan_stamp_mask_dir(mask_dir: Path) -> tuple[list[int], list[Path], list[str]]:
    """Masks named ``<sec>_<nanosec>.png`` in ``mask_dir``: (stamps, paths, ignored file names)."""
    stamps: list[int] = []
    paths: list[Path] = []
    ignored: list[str] = []
    for path in sorted(mask_dir.iterdir()):
        match = _STAMP_NAME.match(path.stem) if path.suffix.lower() == ".png" else None
        if match is None:
            ignored.append(path.name)
            continue
        stamps.append(int(match[1]) * 1_000_000_000 + int(match[2]))
        paths.append(path)
    return stamps, paths, ignored
