"""Read image frames and their anomaly masks from a rosbag2, and write bags from folders.

Reading works in two passes over the bag, so memory stays bounded whatever
the recording length:

1. **Stamps.** Only the header stamp of each image/mask message is parsed
   (12 bytes, no deserialization). The stamps (8 bytes per message) are
   paired: exact stamp first, else the nearest unused mask within
   ``stamp_tolerance_s`` (:func:`~flowclas_ros.data.bag_pairing.pair_by_stamp`).
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

import array
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from flowclas_ros.data.bag_pairing import (
    header_stamp_ns,
    index_mask_name,
    pair_by_stamp,
    scan_stamp_mask_dir,
)
from flowclas_ros.data.bag_source import COMPRESSED_TYPE, IMAGE_TYPE, BagError, BagSource, typestore
from flowclas_ros.data.bag_writer import WriteSummary, write_bag_from_folder
from flowclas_ros.data.image_codec import (
    ImageDecodeError,
    decode_compressed,
    decode_compressed_mono8,
    decode_image,
    decode_mono8,
)

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

log = logging.getLogger(__name__)
_NO_STAMP = -(2**63)
_MAX_LOGGED = 5


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


def _validate_mask(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    if mask.shape != image.shape[:2]:
        raise ImageDecodeError(f"mask size {mask.shape[::-1]} != image size {image.shape[1::-1]} (w, h)")
    bad = (mask != 0) & (mask != 1) & (mask != 255)
    if bad.any():
        raise ImageDecodeError(f"mask values must be 0/1/255, found {np.unique(mask[bad])[:8].tolist()}")
    return mask


def _decode(msgtype: str, raw: bytes, *, label: bool) -> tuple[Any, np.ndarray]:
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


class BagFrameReader:
    """Iterate the frames of one image topic, with masks paired by stamp; see the module doc.

    ``stats`` is filled while iterating. Iterating again re-reads the bag.
    """

    def __init__(
        self,
        bag_path: str | Path,
        image_topic: str,
        mask_topic: str | None = None,
        mask_dir: str | Path | None = None,
        *,
        stamp_tolerance_s: float = 0.01,
        mask_dir_naming: Literal["stamp", "index"] = "stamp",
        stats: BagReadStats | None = None,
    ) -> None:
        """Configure the reader (nothing is read until iteration).

        Args:
            bag_path: rosbag2 directory (sqlite3 or MCAP), or a bare .db3/.mcap file.
            image_topic: Topic of sensor_msgs/Image or sensor_msgs/CompressedImage.
            mask_topic: Optional topic with the masks.
            mask_dir: Optional folder with mask PNGs (exclusive with mask_topic).
            stamp_tolerance_s: Largest stamp difference for a nearest-stamp match; 0 = exact only.
            mask_dir_naming: ``"stamp"`` (``<sec>_<nanosec:09d>.png``) or ``"index"`` (``%06d.png``).
            stats: Object to fill (a new one by default).
        """
        if mask_topic and mask_dir:
            raise ValueError("give either mask_topic or mask_dir, not both")
        if stamp_tolerance_s < 0:
            raise ValueError(f"stamp_tolerance_s must be >= 0, got {stamp_tolerance_s}")
        if mask_dir_naming not in ("stamp", "index"):
            raise ValueError(f"mask_dir_naming must be 'stamp' or 'index', got {mask_dir_naming!r}")
        self.bag_path = Path(bag_path)
        self.image_topic = image_topic
        self.mask_topic = mask_topic or None
        self.mask_dir = Path(mask_dir) if mask_dir else None
        if self.mask_dir is not None and not self.mask_dir.is_dir():
            raise BagError(f"mask folder {self.mask_dir} does not exist")
        self.tolerance_ns = round(stamp_tolerance_s * 1e9)
        self.mask_dir_naming = mask_dir_naming
        self.stats = stats if stats is not None else BagReadStats()

    # ---------------------------------------------------------------- helpers

    def _check_topics(self, src: BagSource) -> None:
        for topic in filter(None, (self.image_topic, self.mask_topic)):
            msgtype = src.topics.get(topic)
            if msgtype is None and not src.salvage:
                known = ", ".join(f"{k} ({v})" for k, v in sorted(src.topics.items())) or "none"
                raise BagError(f"topic {topic!r} is not in bag {self.bag_path}; topics: {known}")
            if msgtype is not None and msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
                raise BagError(
                    f"topic {topic!r} has type {msgtype}; expected {IMAGE_TYPE} or {COMPRESSED_TYPE}"
                )

    def _messages(self, src: BagSource, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """``src.messages`` that turns a mid-bag read error into a recorded problem and a stop."""
        it = src.messages(topics)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as err:  # noqa: BLE001 - damage anywhere in rosbags; keep what was read
                src.problems.append(f"reading stopped early: {type(err).__name__}: {err}")
                return
            yield item

    def _scan_stamps(self, src: BagSource, topics: set[str]) -> tuple[array.array, array.array]:
        """Pass 1: header stamps of every image and mask message; retries in salvage mode on damage."""
        while True:
            stamps = {t: array.array("q") for t in topics}
            try:
                for topic, _, _, raw in src.messages(topics):
                    try:
                        stamps[topic].append(header_stamp_ns(raw))
                    except ValueError:
                        stamps[topic].append(_NO_STAMP)
            except Exception as err:  # noqa: BLE001 - rosbags failed mid-bag: re-read via salvage
                if src.salvage:
                    raise
                src.fall_back(f"rosbags failed after {sum(map(len, stamps.values()))} messages: {err}")
                continue
            return stamps[self.image_topic], stamps.get(self.mask_topic or "", array.array("q"))

    def _pairs(
        self, image_stamps: array.array, mask_stamps: array.array
    ) -> list[tuple[int | None, str | None]]:
        def valid(seq: array.array) -> list[int]:
            return [k for k, s in enumerate(seq) if s != _NO_STAMP]

        vi, vm = valid(image_stamps), valid(mask_stamps)
        sub = pair_by_stamp([image_stamps[k] for k in vi], [mask_stamps[k] for k in vm], self.tolerance_ns)
        pairs: list[tuple[int | None, str | None]] = [(None, None)] * len(image_stamps)
        for k, (j, kind) in zip(vi, sub):
            pairs[k] = (vm[j] if j is not None else None, kind)
        return pairs

    def _frame(
        self, index: int, msgtype: str, raw: bytes, mask_src: Any, match: str | None
    ) -> BagFrame | None:
        """Decode one frame (and its mask); counts and logs failures instead of raising."""
        st = self.stats
        try:
            msg, image = _decode(msgtype, raw, label=False)
        except ImageDecodeError as err:
            st.n_decode_errors += 1
            if st.n_decode_errors <= _MAX_LOGGED:
                log.warning("%s: frame %d of %s skipped: %s", self.bag_path, index, self.image_topic, err)
            return None
        mask = None
        if mask_src is not None:
            try:
                if isinstance(mask_src, Path):
                    mask = cv2.imread(str(mask_src), cv2.IMREAD_UNCHANGED)
                    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
                        raise ImageDecodeError(f"{mask_src} is not a single-channel 8-bit PNG")
                else:
                    mask = _decode(*mask_src, label=True)[1]
                mask = _validate_mask(mask, image)
            except ImageDecodeError as err:
                mask = None
                st.n_mask_errors += 1
                if st.n_mask_errors <= _MAX_LOGGED:
                    log.warning("%s: mask for frame %d unusable: %s", self.bag_path, index, err)
        if mask is not None:
            st.n_paired_exact += match == "exact"
            st.n_paired_nearest += match == "nearest"
        elif self.mask_topic or self.mask_dir:
            st.n_unpaired += 1
        st.n_frames += 1
        encoding = msg.encoding if msgtype == IMAGE_TYPE else msg.format
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return BagFrame(
            index, stamp, msg.header.frame_id, image, mask, match if mask is not None else None, encoding
        )

    # ---------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[BagFrame]:
        """Yield frames (see the module doc); fills ``self.stats``."""
        self.stats.__init__()  # reset in place, so a caller's reference stays valid
        with BagSource(self.bag_path) as src:
            self._check_topics(src)
            topics = {self.image_topic} | ({self.mask_topic} if self.mask_topic else set())
            image_stamps, mask_stamps = self._scan_stamps(src, topics)
            if not image_stamps and src.salvage and self.image_topic not in src.topics:
                raise BagError(f"no readable messages on topic {self.image_topic!r} in {self.bag_path}")
            yield from self._stream(src, topics, image_stamps, mask_stamps)
            self._finish(src)

    def _stream(
        self, src: BagSource, topics: set[str], image_stamps: array.array, mask_stamps: array.array
    ) -> Iterator[BagFrame]:
        st = self.stats
        st.n_image_messages, st.n_mask_messages = len(image_stamps), len(mask_stamps)
        mask_files: dict[int, Path] = {}
        if self.mask_topic:
            pairs = self._pairs(image_stamps, mask_stamps)
        elif self.mask_dir is not None and self.mask_dir_naming == "stamp":
            stamps, paths, _ = scan_stamp_mask_dir(self.mask_dir)
            pairs = self._pairs(image_stamps, array.array("q", stamps))
            mask_files = dict(enumerate(paths))
            st.n_mask_messages = len(paths)
        elif self.mask_dir is not None:
            names = {p.name for p in self.mask_dir.glob("*.png")}
            pairs = [
                (i, "index") if index_mask_name(i) in names else (None, None)
                for i in range(len(image_stamps))
            ]
            mask_files = {i: self.mask_dir / index_mask_name(i) for i, _ in pairs if i is not None}
            st.n_mask_messages = len(names)
        else:
            pairs = [(None, None)] * len(image_stamps)
        image_of_mask = {j: i for i, (j, _) in enumerate(pairs) if j is not None}
        st.n_masks_unused = st.n_mask_messages - len(image_of_mask)
        waiting_images: dict[int, tuple[int, str, bytes]] = {}  # mask index -> image waiting for it
        waiting_masks: dict[int, tuple[str, bytes]] = {}  # mask index -> mask waiting for its image
        counters = {self.image_topic: 0, self.mask_topic: 0}
        for topic, msgtype, _, raw in self._messages(src, topics):
            k = counters[topic]
            counters[topic] += 1
            frame = None
            if topic == self.image_topic:
                j, kind = pairs[k] if k < len(pairs) else (None, None)
                if j is None or j in mask_files:
                    frame = self._frame(k, msgtype, raw, mask_files.get(j), kind)
                elif j in waiting_masks:
                    frame = self._frame(k, msgtype, raw, waiting_masks.pop(j), kind)
                else:
                    waiting_images[j] = (k, msgtype, raw)
            elif k in image_of_mask:
                if k in waiting_images:
                    i, itype, iraw = waiting_images.pop(k)
                    frame = self._frame(i, itype, iraw, (msgtype, raw), pairs[i][1])
                else:
                    waiting_masks[k] = (msgtype, raw)
            st.max_buffered = max(st.max_buffered, len(waiting_images) + len(waiting_masks))
            if frame is not None:
                yield frame
        for i, itype, iraw in waiting_images.values():  # their masks were lost on the second read
            frame = self._frame(i, itype, iraw, None, None)
            if frame is not None:
                yield frame

    def _finish(self, src: BagSource) -> None:
        st = self.stats
        st.salvage = src.salvage
        st.problems = list(dict.fromkeys(src.problems))  # both passes may report the same damage
        if st.problems:
            msg = f"{self.bag_path} is damaged; evaluated the readable part only: {'; '.join(st.problems)}"
            log.warning(msg)
            warnings.warn(msg, BagReadWarning, stacklevel=3)
        if st.n_unpaired:
            log.warning("%s: %d of %d frames have no mask", self.bag_path, st.n_unpaired, st.n_frames)
        if st.n_decode_errors > _MAX_LOGGED:
            log.warning("%s: %d frames could not be decoded in total", self.bag_path, st.n_decode_errors)


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
