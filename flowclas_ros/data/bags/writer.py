"""Write a rosbag2 from a folder dataset (``ROOT/images/<stem>.{png,jpg}``, ``ROOT/masks/<stem>.png``).

Frames are written in stem order with header stamps ``start + i / rate``
(the bag's log time equals the stamp); each mask goes on the mask topic as a
``mono8`` Image with the same header, so readers pair them exactly.
Images and masks are loaded by :class:`~flowclas_ros.data.images.folder.FolderDataset`
(the folder evaluation's loader), so with a lossless colour encoding (rgb8,
bgr8, rgba8, bgra8, 8UC3, 8UC4, rgb16/bgr16/rgba16/bgra16, png) the bag holds
exactly the pixels and labels that folder evaluation sees.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from tqdm import tqdm

from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE, typestore
from flowclas_ros.data.images.codec import (
    COLOR_ENCODINGS,
    compressed_format_string,
    encode_compressed,
    encode_image,
    encode_mono8,
)
from flowclas_ros.data.images.folder import FolderDataset

DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
"""Default stamp of the first frame (fixed, so the same folder always gives the same bag)."""
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
COMPRESSED_FORMATS = ("jpeg", "png")


@dataclass
class WriteSummary:
    """What :func:`write_bag_from_folder` wrote."""

    path: Path
    n_images: int
    n_masks: int
    first_stamp_ns: int
    last_stamp_ns: int


def write_bag_from_folder(
    root: str | Path,
    out_bag: str | Path,
    *,
    image_topic: str = "/camera/image_raw",
    mask_topic: str | None = "/camera/anomaly_mask",
    rate_hz: float = 10.0,
    encoding: str = "rgb8",
    storage: str = "sqlite3",
    frame_id: str = "camera",
    start_ns: int = DEFAULT_START_NS,
    jpeg_quality: int = 95,
    progress: bool = False,
) -> WriteSummary:
    """Write the folder dataset at ``root`` into a new rosbag2 at ``out_bag``.

    Args:
        root: Dataset root with ``images/`` and optionally ``masks/``.
        out_bag: Bag directory to create; must not exist.
        image_topic: Topic for the images.
        mask_topic: Topic for the masks (mono8 Image); None writes no masks.
        rate_hz: Frame rate; frame i is stamped ``start_ns + i / rate_hz``.
        encoding: A raw encoding (see ``image_codec.COLOR_ENCODINGS``) for
            ``sensor_msgs/Image``, or ``"jpeg"``/``"png"`` for ``CompressedImage``.
        storage: ``"sqlite3"`` or ``"mcap"``.
        frame_id: ``header.frame_id`` of every message.
        start_ns: Stamp of the first frame.
        jpeg_quality: JPEG quality when ``encoding == "jpeg"``.
        progress: Show a tqdm progress bar.

    Raises:
        ValueError: Bad arguments or dataset (the message names the file); no bag is left behind.
        FileExistsError: ``out_bag`` exists.
    """
    if rate_hz <= 0:
        raise ValueError(f"rate must be > 0, got {rate_hz}")
    if encoding not in COLOR_ENCODINGS and encoding not in COMPRESSED_FORMATS:
        raise ValueError(
            f"unknown encoding {encoding!r}; use one of {', '.join([*COLOR_ENCODINGS, 'jpeg', 'png'])}"
        )
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; use sqlite3 or mcap")
    if mask_topic == image_topic:
        raise ValueError(f"image and mask topic are the same: {image_topic!r}")
    out_bag = Path(out_bag)
    if out_bag.exists():
        raise FileExistsError(f"{out_bag} already exists; not overwriting")
    dataset = FolderDataset(root)
    ts = typestore()
    image_type = COMPRESSED_TYPE if encoding in COMPRESSED_FORMATS else IMAGE_TYPE
    types = ts.types
    header_cls, time_cls = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
    n_masks = 0
    stamps = [start_ns + round(i * 1e9 / rate_hz) for i in range(len(dataset))]
    try:
        with Writer(out_bag, version=9, storage_plugin=STORAGES[storage]) as writer:
            image_conn = writer.add_connection(image_topic, image_type, typestore=ts)
            mask_conn = writer.add_connection(mask_topic, IMAGE_TYPE, typestore=ts) if mask_topic else None
            for index, stamp in tqdm(
                list(enumerate(stamps)), desc="writing bag", unit="frame", disable=not progress
            ):
                rgb = dataset.load_image(index)
                image_path = dataset.image_paths[index]
                header = header_cls(
                    stamp=time_cls(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000),
                    frame_id=frame_id,
                )
                if image_type == COMPRESSED_TYPE:
                    data = encode_compressed(rgb, encoding, jpeg_quality)
                    msg = types[COMPRESSED_TYPE](
                        header=header, format=compressed_format_string(encoding), data=_u8(data)
                    )
                else:
                    try:
                        step, data = encode_image(rgb, encoding)
                    except ValueError as err:
                        raise ValueError(f"{image_path}: {err}") from err
                    msg = _image_msg(types, header, rgb.shape[:2], encoding, step, data)
                writer.write(image_conn, stamp, ts.serialize_cdr(msg, image_type))
                mask = dataset.load_mask(index, rgb.shape[:2]) if mask_conn is not None else None
                if mask is not None:
                    step, data = encode_mono8(mask)
                    mask_msg = _image_msg(types, header, rgb.shape[:2], "mono8", step, data)
                    writer.write(mask_conn, stamp, ts.serialize_cdr(mask_msg, IMAGE_TYPE))
                    n_masks += 1
    except BaseException:
        shutil.rmtree(out_bag, ignore_errors=True)  # we created it; leave nothing half-written
        raise
    return WriteSummary(out_bag, len(dataset), n_masks, stamps[0], stamps[-1])


def _u8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)


def _image_msg(types, header, shape: tuple[int, int], encoding: str, step: int, data: bytes):
    return types[IMAGE_TYPE](
        header=header,
        height=shape[0],
        width=shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=_u8(data),
    )
