"""Read image frames and their anomaly masks from a rosbag2, and write bags from folders.

Reading works in two passes over the bag, so memory stays bounded whatever
the recording length:

1. **Stamps.** Only the header stamp of each image/mask message is parsed
   (12 bytes, no deserialization). The stamps (8 bytes per message) are
   paired: exact stamp first, else the nearest unused mask within
   ``stamp_tolerance_s`` (:func:`~flowclas_ros.data.bags.pairing.pair_by_stamp`).
2. **Frames.** Messages are streamed again in file order. A frame is
   yielded as soon as both its image and its mask have been read; an image
   whose mask comes later in the file (or the reverse) waits as raw bytes.
   For bags where an image and its mask are logged together this buffer
   holds at most one message (``stats.max_buffered`` reports the peak).

Masks come from a mask topic (``sensor_msgs/Image`` mono8/8UC1 or a PNG
``CompressedImage``, values 0 normal / 1 anomaly / 255 ignore) or from a
folder (``mask_dir``) named by stamp, ``<sec>_<nanosec:09d>.png`` (default;
robust to dropped frames), or by the frame's position in the image topic,
``%06d.png`` (``mask_dir_naming="index"``).

Frames without a mask are still yielded (``mask=None``) and counted in
``stats.n_unpaired``; frames that cannot be decoded are counted in
``stats.n_decode_errors``. A damaged bag yields what can be salvaged and
warns with :class:`BagReadWarning`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from flowclas_ros.data.bags.reader import BagFrameReader
from flowclas_ros.data.bags.source import BagError
from flowclas_ros.data.bags.types import BagFrame, BagReadStats, BagReadWarning
from flowclas_ros.data.bags.writer import WriteSummary, write_bag_from_folder

__all__ = [
    "BagError",
    "BagFrame",
    "BagFrameReader",
    "BagReadStats",
    "BagReadWarning",
    "WriteSummary",
    "iter_bag_frames",
    "write_bag_from_folder",
]


def iter_bag_frames(
    bag_path: str | Path,
    image_topic: str,
    mask_topic: str | None = None,
    mask_dir: str | Path | None = None,
    *,
    stamp_tolerance_s: float = 0.01,
    mask_dir_naming: Literal["stamp", "index"] = "stamp",
    stats: BagReadStats | None = None,
) -> Iterator[BagFrame]:
    """Iterate frames of ``image_topic`` with paired masks; pass ``stats`` to get the counts.

    See :class:`BagFrameReader` for the arguments.
    """
    return iter(
        BagFrameReader(
            bag_path,
            image_topic,
            mask_topic,
            mask_dir,
            stamp_tolerance_s=stamp_tolerance_s,
            mask_dir_naming=mask_dir_naming,
            stats=stats,
        )
    )
