"""``sensor_msgs/CompressedImage`` (JPEG / PNG) to numpy and back.

The ``format`` field follows image_transport: ``"jpeg"``, ``"png"`` or
``"<source enc>; <jpeg|png> compressed <stored enc>"`` such as
``"rgb8; jpeg compressed bgr8"``. The stream's magic bytes decide the codec;
the stored encoding only tells whether colour streams hold RGB instead of the
usual BGR. Image size is read from the PNG/JPEG header *before* decoding, so a
corrupt or hostile header cannot make us allocate gigabytes.
"""

from __future__ import annotations

import cv2
import numpy as np

from flowclas_ros.data.images.errors import MAX_PIXELS, MAX_SIDE, ImageDecodeError, check_size

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8"
# JPEG start-of-frame markers carrying the image size (C4 = DHT, C8 = JPG, CC = DAC are not frames).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    """(height, width) from the first SOF segment, or None if not found."""
    i, n = 2, len(b)
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            return (b[i + 5] << 8) | b[i + 6], (b[i + 7] << 8) | b[i + 8]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + ((b[i + 2] << 8) | b[i + 3])
    return None


def _header_size(kind: str, head: bytes) -> tuple[int, int] | None:
    if kind == "png":
        if len(head) < 24 or head[12:16] != b"IHDR":
            return None
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    return _jpeg_size(head)


def _imdecode(
    fmt: str, data: bytes | memoryview | np.ndarray, max_side: int, max_pixels: int
) -> tuple[np.ndarray, str]:
    """Decode with OpenCV after validating the stream; returns (imdecode result, "png"|"jpeg")."""
    if not isinstance(fmt, str):
        raise ImageDecodeError(f"compressed image format must be a string, got {fmt!r}")
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(f"compressedDepth images are not supported (format {fmt!r})")
    try:
        if isinstance(data, np.ndarray):
            buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        else:
            buf = np.frombuffer(memoryview(data).cast("B"), np.uint8)
    except (TypeError, ValueError) as err:
        raise ImageDecodeError(f"compressed data of type {type(data).__name__} is not a byte buffer") from err
    if buf.size == 0:
        raise ImageDecodeError(f"empty compressed image (format {fmt!r})")
    head = buf[:65536].tobytes()  # SOF is normally within the first few kB
    if head.startswith(_PNG_MAGIC):
        kind = "png"
    elif head.startswith(_JPEG_MAGIC):
        kind = "jpeg"
    else:
        raise ImageDecodeError(
            f"compressed data (format {fmt!r}, {buf.size} bytes) is neither JPEG nor PNG "
            f"(starts with {head[:8].hex()})"
        )
    size = _header_size(kind, head)
    if size is not None:
        check_size(f"{kind} (format {fmt!r})", size[0], size[1], max_side, max_pixels)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageDecodeError(f"undecodable {kind} data (format {fmt!r}, {buf.size} bytes)")
    check_size(f"{kind} (format {fmt!r})", img.shape[0], img.shape[1], max_side, max_pixels)
    return img, kind


def decode_compressed(
    format: str,  # noqa: A002 - the message field's name
    data: bytes | memoryview | np.ndarray,
    *,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` to an HxWx3 uint8 RGB array.

    Grey streams are expanded to three channels, 16-bit PNGs are mapped to
    8 bit like raw ``mono16`` (``round(v * 255 / 65535)``), alpha is dropped.

    Args:
        format: The message's ``format`` field.
        data: The message's ``data`` buffer.
        max_side: Largest accepted width or height.
        max_pixels: Largest accepted width*height.

    Raises:
        ImageDecodeError: Empty, non-JPEG/PNG, undecodable or oversized data.
    """
    img, _ = _imdecode(format, data, max_side, max_pixels)
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f"unsupported compressed sample type {img.dtype} (format {format!r})")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    stored_rgb = format.replace(" ", "").lower().endswith(("compressedrgb8", "compressedrgba8"))
    if img.shape[2] == 3:
        return img if stored_rgb else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2RGB if stored_rgb else cv2.COLOR_BGRA2RGB)
    raise ImageDecodeError(f"unsupported channel count {img.shape[2]} (format {format!r})")


def decode_compressed_mono8(
    format: str,  # noqa: A002 - the message field's name
    data: bytes | memoryview | np.ndarray,
    *,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a single-channel 8-bit PNG label image (mask) to HxW uint8, values untouched.

    JPEG is refused: lossy compression changes label values.
    """
    img, kind = _imdecode(format, data, max_side, max_pixels)
    if kind != "png":
        raise ImageDecodeError(f"label images must be PNG, not JPEG (format {format!r})")
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ImageDecodeError(
            f"label image must be single-channel 8-bit, got shape {img.shape} dtype {img.dtype} "
            f"(format {format!r})"
        )
    return img


def encode_compressed(image: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """Encode an HxWx3 uint8 RGB (or HxW uint8 grey) image as JPEG or PNG bytes.

    Args:
        image: RGB (H, W, 3) or grey (H, W) uint8.
        fmt: ``"jpeg"`` (or ``"jpg"``) or ``"png"``.
        quality: JPEG quality 1..100 (ignored for PNG, which is lossless).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError("encode_compressed expects an (H, W, 3) or (H, W) uint8 array")
    if image.ndim == 3 and image.shape[2] != 3:
        raise ValueError(f"encode_compressed expects 3 channels, got {image.shape[2]}")
    fmt = fmt.lower()
    if fmt in ("jpeg", "jpg"):
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]
    else:
        raise ValueError(f"unsupported compressed format {fmt!r}; use 'jpeg' or 'png'")
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def compressed_format_string(fmt: str, source_encoding: str = "rgb8") -> str:
    """The image_transport ``format`` field, e.g. ``"rgb8; jpeg compressed bgr8"``."""
    fmt = "jpeg" if fmt.lower() in ("jpeg", "jpg") else fmt.lower()
    stored = "mono8" if source_encoding in ("mono8", "8UC1") else "bgr8"
    return f"{source_encoding}; {fmt} compressed {stored}"
