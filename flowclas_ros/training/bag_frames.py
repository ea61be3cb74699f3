"""Training frames from a rosbag2 recording.

A recording is read once, when training starts, with the evaluation's bag reader
(:class:`~flowclas_ros.data.bags.reader.BagFrameReader`: the node's decoding in
``data/images/codec.py``, the salvage fallback for damaged bags):

1. the header stamps of every image message are scanned without decoding, and only the
   frames that pass the ``data.bag.max_rate_hz`` gate are decoded;
2. a decoded frame nearly identical to the last kept one is dropped (``skip_static``);
3. the kept frames go, as decoded RGB bytes, into a scratch file that is memory-mapped
   (:class:`FrameStore`): training then reads each frame many times at memcpy cost, with
   no per-epoch decoding, and memory stays bounded whatever the recording length.

The frames then take exactly the folder images' path (``OETrainDataset``: resize or crop,
Outlier Exposure, normalisation). Bad input is a one-line :class:`ConfigError` naming the
key, the bag and the topic; undecodable frames and a damaged (cut-off) bag are one-line
warnings with counts.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from flowclas_ros.config_io import ConfigError
from flowclas_ros.data.bags.reader import NO_STAMP, BagFrameReader
from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE, BagError, BagSource
from flowclas_ros.data.bags.source import log as source_log
from flowclas_ros.data.bags.types import BagReadStats, BagReadWarning
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.training.config import BagConfig

log = logging.getLogger(__name__)

BAG_SUFFIXES = (".db3", ".mcap")
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
THUMB_SIDE = 32
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def is_bag(path: Path) -> bool:
    """True if ``path`` is a rosbag2: a folder with ``metadata.yaml`` or ``.db3``/``.mcap`` files, or one."""
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return True
        return not (path / "images").is_dir() and any(p.suffix in BAG_SUFFIXES for p in path.iterdir())
    return path.suffix in BAG_SUFFIXES


def _unlink(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked DataLoader worker must not delete its parent's file
        path.unlink(missing_ok=True)


class FrameStore:
    """Decoded uint8 frames appended to a scratch file, read back through a memory map.

    The file lives in the temporary directory (``TMPDIR``) and is deleted when the store is
    garbage-collected or the process exits. Pickling (DataLoader workers under spawn) sends
    the path, not the data.
    """

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="flowclas-frames-", suffix=".u8")
        self.path = Path(name)
        self._writer: Any = os.fdopen(fd, "wb")
        self._map: mmap.mmap | None = None
        self.entries: list[tuple[int, tuple[int, ...]]] = []  # (byte offset, shape)
        self._cleanup = weakref.finalize(self, _unlink, self.path, os.getpid())

    def append(self, image: np.ndarray) -> int:
        """Stores ``image``; returns its index."""
        data = np.ascontiguousarray(image, dtype=np.uint8)
        self.entries.append((self._writer.tell(), data.shape))
        self._writer.write(memoryview(data).cast("B"))  # no intermediate bytes copy
        return len(self.entries) - 1

    def finish(self) -> None:
        """Ends writing (call once, before reading)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` as a new writable array."""
        if self._map is None:
            with open(self.path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        offset, shape = self.entries[index]
        return np.frombuffer(self._map, np.uint8, math.prod(shape), offset).reshape(shape).copy()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "entries": self.entries}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.entries = state["path"], state["entries"]
        self._writer, self._map = None, None


@dataclass
class BagReport:
    """What was read from one recording (for logs and the checkpoint's provenance).

    Attributes:
        path: The bag.
        topic: The image topic read.
        msgtype: Its message type.
        messages: Image messages on the topic.
        decoded: Frames decoded (those past the rate gate, minus the undecodable ones).
        undecodable: Frames that could not be decoded (skipped).
        rate_skipped: Frames dropped by ``max_rate_hz`` (never decoded).
        static_skipped: Frames dropped as nearly identical to the last kept one.
        kept: Frames used.
        first_stamp_ns: First header stamp of the recording (all messages of the topic).
        last_stamp_ns: Last one.
        problems: Damage found (a cut-off bag), empty when the bag is whole.
    """

    path: str
    topic: str
    msgtype: str
    messages: int = 0
    decoded: int = 0
    undecodable: int = 0
    rate_skipped: int = 0
    static_skipped: int = 0
    kept: int = 0
    first_stamp_ns: int = 0
    last_stamp_ns: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Provenance entry (``kind: bag``)."""
        return {"kind": "bag", **self.__dict__, "problems": list(self.problems)}


class BagFrames(FolderDataset):
    """The kept frames of one recording, in stamp order, as a dataset (no masks: all normal).

    Fills the attributes :class:`FolderDataset`'s consumers use, without its folder scan.
    """

    def __init__(self, report: BagReport, store: FrameStore, rows: list[int], stamps_ns: list[int]):
        self.report = report
        self.store = store
        self.rows = list(rows)
        self.stamps_ns = list(stamps_ns)
        self.root = Path(report.path)
        name = self.root.name
        self.stems = [f"{name}/{s // 1_000_000_000}_{s % 1_000_000_000:09d}" for s in self.stamps_ns]
        self.image_paths = [self.root] * len(self.rows)
        self.mask_paths = [None] * len(self.rows)
        self.label_map: dict[int, int] = {}
        self.default_label = None

    def subset(self, indices: Sequence[int]) -> BagFrames:
        """The items ``indices`` as a new dataset over the same store."""
        return BagFrames(
            self.report, self.store, [self.rows[i] for i in indices], [self.stamps_ns[i] for i in indices]
        )

    def load_image(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) exactly as the node decodes the message."""
        return self.store.get(self.rows[index])

    def load_mask(self, index: int, shape: tuple[int, int] | None = None) -> None:
        """Recordings carry no masks: every frame is normal."""
        return None

    def split_by_time(self, val_fraction: float, key: str) -> tuple[BagFrames, BagFrames]:
        """(train, val): val holds the frames in the last ``val_fraction`` of the recording's time.

        The time is that of the kept frames (first to last), so the last kept frame is always
        in val and thinning (rate, static stretches) never leaves the held-out part empty.
        """
        rep = self.report
        first, last = min(self.stamps_ns, default=0), max(self.stamps_ns, default=0)
        cut = last - val_fraction * (last - first)
        val_idx = [i for i, s in enumerate(self.stamps_ns) if s >= cut]
        train_idx = [i for i, s in enumerate(self.stamps_ns) if s < cut]
        if not val_idx or not train_idx:
            raise ConfigError(
                f"data.val: empty, and {key}: bag {rep.path} topic {rep.topic} keeps {len(self)} frame(s) "
                f"({len(train_idx)} before and {len(val_idx)} in its last {val_fraction:.0%} of time), "
                f"too few to hold out data.val_fraction={val_fraction}; record longer, raise "
                "data.bag.max_rate_hz, or set data.val"
            )
        return self.subset(train_idx), self.subset(val_idx)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """32x32 grey thumbnail (area-averaged, float32 0-255) used by the static-frame test."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)


def rate_gate(stamps: Sequence[int], max_rate_hz: float) -> list[int]:
    """Message indices kept by the rate gate, in stamp order (unparsable stamps are dropped).

    A frame is kept when it is at least ``1 / max_rate_hz`` after the last kept one;
    ``max_rate_hz`` 0 keeps every frame.
    """
    valid = sorted((s, k) for k, s in enumerate(stamps) if s != NO_STAMP)
    if max_rate_hz <= 0:
        return [k for _, k in valid]
    period = round(1e9 / max_rate_hz)
    kept: list[int] = []
    next_ok: int | None = None
    for stamp, k in valid:
        if next_ok is None or stamp >= next_ok:
            kept.append(k)
            next_ok = stamp + period
    return kept


def bag_topics(path: Path) -> dict[str, str]:
    """Topic -> message type: from ``metadata.yaml`` when it lists them (cheap), else from the storage."""
    try:
        meta = yaml.load((path / "metadata.yaml").read_text(), Loader=_YAML_LOADER)  # noqa: S506 - safe loader
        entries = meta["rosbag2_bagfile_information"]["topics_with_message_count"]
        topics = {e["topic_metadata"]["name"]: e["topic_metadata"]["type"] for e in entries}
        if topics:
            return topics
    except (OSError, yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError):
        pass  # a bare storage file, or damaged metadata: ask the storage (salvage readers)
    level = source_log.level
    source_log.setLevel(logging.ERROR)  # damage is reported once, by the frame reader that follows
    try:
        with BagSource(path) as src:
            return dict(src.topics)
    finally:
        source_log.setLevel(level)


def choose_topic(path: Path, configured: str, key: str) -> tuple[str, str]:
    """The image topic to read and its type; a clear error when it is missing, ambiguous or not an image."""
    topics = bag_topics(path)
    listed = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
    if configured:
        msgtype = topics.get(configured)
        if msgtype is None:
            if not topics:  # a damaged bag whose topic list is unreadable: let the reader try
                return configured, ""
            raise ConfigError(
                f"{key}: bag {path} has no topic {configured} (data.bag.image_topic); topics: {listed}"
            )
        if msgtype not in IMAGE_TYPES:
            raise ConfigError(
                f"{key}: bag {path} topic {configured} has type {msgtype}; data.bag.image_topic must be a "
                f"{IMAGE_TYPE} or {COMPRESSED_TYPE} topic"
            )
        return configured, msgtype
    images = sorted(t for t, m in topics.items() if m in IMAGE_TYPES)
    if len(images) == 1:
        return images[0], topics[images[0]]
    if not images:
        raise ConfigError(
            f"{key}: bag {path} has no {IMAGE_TYPE} or {COMPRESSED_TYPE} topic; topics: {listed}"
        )
    raise ConfigError(
        f"{key}: bag {path} has {len(images)} image topics ({', '.join(images)}); "
        "choose one with data.bag.image_topic"
    )


def read_bag_frames(path: Path, cfg: BagConfig, key: str) -> BagFrames:
    """Reads, thins and stores one recording's frames (see the module doc).

    Raises:
        ConfigError: Missing bag or topic, a topic of the wrong type, an empty topic, or no
            usable frame; the message names ``key``, the bag and the topic.
    """
    if not path.exists():
        raise ConfigError(f"{key}: bag {path} does not exist")
    try:
        topic, msgtype = choose_topic(path, cfg.image_topic, key)
    except BagError as exc:
        raise ConfigError(f"{key}: bag {path}: {exc}") from exc
    report = BagReport(str(path.resolve()), topic, msgtype)
    span: dict[str, int] = {}

    def select(stamps: Sequence[int]) -> list[int]:
        valid = [s for s in stamps if s != NO_STAMP]
        if valid:
            span.update(first=min(valid), last=max(valid))
        return rate_gate(stamps, cfg.max_rate_hz)

    stats = BagReadStats()
    store = FrameStore()
    rows: list[int] = []
    stamps_ns: list[int] = []
    last: np.ndarray | None = None
    reader = BagFrameReader(path, topic, stats=stats, select=select)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BagReadWarning)  # reported below as one line with counts
            for frame in reader:
                if cfg.skip_static:
                    thumb = thumbnail(frame.image)
                    if last is not None and float(np.abs(thumb - last).mean()) < cfg.static_threshold:
                        report.static_skipped += 1
                        continue
                    last = thumb
                rows.append(store.append(frame.image))
                stamps_ns.append(frame.stamp_ns)
    except BagError as exc:
        raise ConfigError(f"{key}: bag {path} topic {topic}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - rosbags / sqlite / mcap raise many types on broken files
        raise ConfigError(
            f"{key}: bag {path} topic {topic}: cannot read ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        store.finish()
    report.messages = stats.n_image_messages
    report.undecodable = stats.n_decode_errors
    report.decoded = stats.n_frames
    report.rate_skipped = stats.n_image_messages - stats.n_frames - stats.n_decode_errors
    report.kept = len(rows)
    report.problems = list(stats.problems)
    report.first_stamp_ns, report.last_stamp_ns = span.get("first", 0), span.get("last", 0)
    where = f"{key}: bag {path} topic {topic}"
    if report.messages == 0:
        raise ConfigError(f"{where}: no messages (an empty recording?)")
    if report.problems:
        log.warning(
            "%s: damaged (%s); training on the %d readable frames",
            where,
            "; ".join(report.problems),
            report.kept,
        )
    if report.undecodable:
        log.warning("%s: skipped %d undecodable frames of %d", where, report.undecodable, report.messages)
    if not rows:
        raise ConfigError(
            f"{where}: none of its {report.messages} frames could be decoded; nothing to train on"
        )
    order = sorted(range(len(rows)), key=lambda i: stamps_ns[i])  # file order is usually stamp order
    log.info(
        "%s: %d messages, %d kept (%d over max_rate_hz=%g, %d static, %d undecodable)",
        where,
        report.messages,
        report.kept,
        report.rate_skipped,
        cfg.max_rate_hz,
        report.static_skipped,
        report.undecodable,
    )
    return BagFrames(report, store, [rows[i] for i in order], [stamps_ns[i] for i in order])
