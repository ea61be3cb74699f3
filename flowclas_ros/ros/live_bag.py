"""The bag side of a live replay: the recorded image messages as they were, or re-encoded.

The replay publishes each image's recorded CDR bytes unchanged, read in lockstep with the
evaluation's frame reader (which pairs masks); a frame whose raw bytes are unreadable in a
damaged bag is published as a lossless re-encoding of its decoded image.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE, BagSource, typestore
from flowclas_ros.data.images.codec import ImageDecodeError, encode_image
from flowclas_ros.evaluation.frames import EvalFrame

_RAW_LOOKAHEAD = 64  # raw messages buffered while the frame reader waits for a late mask


class RawImages:
    """The image topic's recorded CDR messages by index, read in lockstep with the frame reader."""

    def __init__(self, bag: Path, topic: str) -> None:
        self._src = BagSource(bag)
        self._it: Iterator[Any] | None = self._src.messages({topic})
        self._next = 0
        self._buffer: OrderedDict[int, tuple[str, int, bytes]] = OrderedDict()
        self.msgtype = self._src.topics.get(topic) or ""
        first = self.get(0)
        if first is not None:
            self._buffer[0] = first
            self.msgtype = first[0]

    def get(self, index: int) -> tuple[str, int, bytes] | None:
        """``(msgtype, log_time_ns, cdr)`` of image message ``index``, or None if unreadable."""
        if index in self._buffer:
            return self._buffer.pop(index)
        while self._it is not None and self._next <= index:
            try:
                _, msgtype, log_ns, raw = next(self._it)
            except StopIteration:
                self._it = None
                break
            except Exception:  # noqa: BLE001 - damaged bag: the caller re-encodes the decoded frame
                self._it = None
                break
            i, self._next = self._next, self._next + 1
            if i == index:
                return msgtype, log_ns, bytes(raw)
            self._buffer[i] = (msgtype, log_ns, bytes(raw))
            while len(self._buffer) > _RAW_LOOKAHEAD:
                self._buffer.popitem(last=False)
        return None

    def close(self) -> None:
        """Close the bag."""
        self._src.close()


def reencode(frame: EvalFrame, msgtype: str) -> bytes:
    """CDR of a lossless re-encoding of a decoded frame (used when its raw bytes are unreadable)."""
    ts = typestore()
    types = ts.types
    stamp = int(frame.stamp_ns or 0)
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000),
        frame_id="",
    )
    if msgtype == COMPRESSED_TYPE:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ImageDecodeError(f"{frame.name}: PNG re-encoding failed")
        msg = types[COMPRESSED_TYPE](header=header, format="png", data=buf.reshape(-1))
    else:
        step, data = encode_image(frame.image, "rgb8")
        h, w = frame.image.shape[:2]
        msg = types[IMAGE_TYPE](
            header=header,
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=step,
            data=np.frombuffer(data, np.uint8),
        )
    return bytes(ts.serialize_cdr(msg, msgtype))
