"""Raw message access to a rosbag2 (sqlite3 or MCAP), with a salvage fallback for damaged bags.

Normal bags are read with ``rosbags.highlevel.AnyReader``. If that cannot
open the bag, or fails part-way through, the source switches to the salvage
readers in :mod:`flowclas_ros.data.bags.salvage` and records why in
``problems``; callers then re-read from the start in that mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import yaml
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from flowclas_ros.data.bags.salvage import RawMessage, mcap_messages, sqlite_messages, sqlite_topics

log = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"

_TYPESTORE = None


def typestore():
    """The ROS 2 Jazzy typestore (sensor_msgs/Image and CompressedImage are stable across distros)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
    return _TYPESTORE


class BagError(ValueError):
    """The bag cannot be used at all (missing, not a rosbag2, no such topic, wrong type)."""


def _read_metadata(bag_dir: Path) -> dict:
    try:
        meta = yaml.safe_load((bag_dir / "metadata.yaml").read_text())
        return meta.get("rosbag2_bagfile_information", {}) if isinstance(meta, dict) else {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}


class BagSource:
    """Raw ``(topic, msgtype, log_time_ns, cdr_bytes)`` messages of a bag, in file order.

    Attributes:
        path: The bag directory (or a single ``.db3``/``.mcap`` file).
        salvage: True once reading goes through the salvage readers.
        problems: Human-readable descriptions of damage found so far.
        topics: Topic name -> message type, as far as known before reading.
    """

    def __init__(self, path: str | Path) -> None:
        """Open ``path``; falls back to salvage mode if rosbags cannot open it."""
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self.salvage = False
        self.problems: list[str] = []
        self.topics: dict[str, str] = {}
        self._reader: AnyReader | None = None
        meta = _read_metadata(self.path) if self.path.is_dir() else {}
        self._expected = int(meta.get("message_count") or 0)
        self._meta_files = [self.path / f for f in meta.get("relative_file_paths") or []]
        for entry in meta.get("topics_with_message_count") or []:
            topic = (entry or {}).get("topic_metadata") or {}
            if "name" in topic and "type" in topic:
                self.topics[topic["name"]] = topic["type"]
        if self.path.is_dir() and (self.path / "metadata.yaml").exists():
            try:
                reader = AnyReader([self.path], default_typestore=typestore())
                reader.open()
            except Exception as err:  # rosbags raises many types on damaged files
                self.fall_back(f"rosbags could not open the bag: {err}")
            else:
                self._reader = reader
                self.topics = {name: info.msgtype or "" for name, info in reader.topics.items()}
                return
        else:
            self.salvage = True  # a bare storage file, or a directory without metadata.yaml
        self._salvage_topics()

    def fall_back(self, reason: str) -> None:
        """Switch to the salvage readers (idempotent); ``reason`` goes into ``problems``."""
        self.problems.append(reason)
        log.warning("%s: %s; reading what can be salvaged", self.path, reason)
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001 - closing a broken reader must not mask the real error
                pass
            self._reader = None
        self.salvage = True

    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        files = [f for f in self._meta_files if f.exists()]
        if not files:
            files = sorted([*self.path.glob("*.db3"), *self.path.glob("*.mcap")])
        if not files:
            raise BagError(f"{self.path}: no .db3 or .mcap storage file found (is this a rosbag2 directory?)")
        for f in files:
            if f.suffix not in (".db3", ".mcap"):
                raise BagError(f"{f}: unsupported storage file (file-compressed bags are not supported)")
        return files

    def _salvage_topics(self) -> None:
        """Fill ``topics`` from the storage files when metadata.yaml did not."""
        for f in self._storage_files():
            if f.suffix == ".db3":
                self.topics.update(sqlite_topics(f))

    def messages(self, topics: set[str]) -> Iterator[RawMessage]:
        """Yield raw messages of ``topics``. In rosbags mode, errors propagate to the caller."""
        if self._reader is not None:
            reader = self._reader
            connections = [c for c in reader.connections if c.topic in topics]
            for conn, log_time, raw in reader.messages(connections=connections):
                yield conn.topic, conn.msgtype, log_time, raw
            return
        for f in self._storage_files():
            try:
                if f.suffix == ".db3":
                    yield from sqlite_messages(f, topics, self._expected, self.problems)
                else:
                    yield from mcap_messages(f, topics, self.problems)
            except Exception as err:  # noqa: BLE001 - report damage, keep what was read
                self.problems.append(f"{f.name}: unreadable ({type(err).__name__}: {err})")

    def close(self) -> None:
        """Release the reader."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
