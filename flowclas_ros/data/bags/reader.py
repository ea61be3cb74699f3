"""The two-pass bag frame reader behind :func:`flowclas_ros.data.bags.frames.iter_bag_frames`."""

from __future__ import annotations

import array
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from flowclas_ros.data.bags.pairing import (
    header_stamp_ns,
    index_mask_name,
    pair_by_stamp,
    scan_stamp_mask_dir,
)
from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE, BagError, BagSource
from flowclas_ros.data.bags.types import BagFrame, BagReadStats, BagReadWarning, decode_message, validate_mask
from flowclas_ros.data.images.codec import ImageDecodeError

log = logging.getLogger(__name__)
_NO_STAMP = -(2**63)
_MAX_LOGGED = 5


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
        if mask_topic and mask_topic == image_topic:
            raise ValueError(f"image and mask topic are the same: {image_topic!r}")
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
            msg, image = decode_message(msgtype, raw, label=False)
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
                    mask = decode_message(*mask_src, label=True)[1]
                mask = validate_mask(mask, image)
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
