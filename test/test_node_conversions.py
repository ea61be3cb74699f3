"""flowclas_ros.ros.conversions on real sensor_msgs messages, against OpenCV reference conversions."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from ros_harness import compressed_msg, image_msg, raw_image_msg, require_ros, textured_image

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def conv():
    require_ros()
    from flowclas_ros.ros import conversions

    return conversions


def _stamp():
    from builtin_interfaces.msg import Time

    return Time(sec=7, nanosec=9)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    out = np.empty(rgb.shape[:2], np.uint8)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return out


def _reference(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """OpenCV's own round trip of ``rgb`` through ``encoding`` (the expected decode)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding in ("mono8", "8UC1", "mono16", "32FC1"):
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    if encoding.startswith("bayer_"):
        pattern = encoding[len("bayer_") : -1]
        return cv2.cvtColor(_mosaic(rgb, pattern), getattr(cv2, f"COLOR_Bayer{pattern.upper()}2RGB"))
    if encoding in ("yuv422", "uyvy"):
        return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY), cv2.COLOR_YUV2RGB_UYVY)
    if encoding in ("yuv422_yuy2", "yuyv"):
        return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUYV), cv2.COLOR_YUV2RGB_YUY2)
    return rgb


ENCODINGS = [
    "rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4", "mono8", "8UC1", "mono16", "rgb16", "bgr16",
    "rgba16", "bgra16", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8", "yuv422", "uyvy",
    "yuv422_yuy2", "yuyv", "32FC1",
]  # fmt: skip


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("padding", [0, 8])
def test_image_to_rgb_matches_opencv(conv, encoding, padding):
    rgb = textured_image(30, 40, seed=1)
    msg = image_msg(rgb, encoding, "f", _stamp(), step_padding=padding)
    out = conv.to_rgb(msg, max_side=4096)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _reference(rgb, encoding))


def test_big_endian_mono16(conv):
    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    msg = raw_image_msg("mono16", 3, 4, 8, values.astype(">u2").tobytes(), "f", _stamp())
    msg.is_bigendian = 1
    expected = cv2.cvtColor(cv2.convertScaleAbs(values, alpha=255.0 / 65535.0), cv2.COLOR_GRAY2RGB)
    np.testing.assert_array_equal(conv.to_rgb(msg, max_side=4096), expected)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8"])
def test_compressed_to_rgb_matches_opencv(conv, fmt):
    from flowclas_ros.data.images.codec import encode_compressed

    rgb = textured_image(30, 40, seed=2)
    data = encode_compressed(rgb, "png" if "png" in fmt else "jpeg")
    out = conv.to_rgb(compressed_msg(data, fmt, "f", _stamp()), max_side=4096)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(out, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        (("rgb8", 4, 4, 10, bytes(40)), "step"),
        (("rgb8", 4, 4, 12, bytes(20)), "truncated"),
        (("xyz9", 4, 4, 12, bytes(48)), "unsupported"),
        (("rgb8", 0, 4, 12, b""), "zero-size"),
        (("rgb8", 5000, 4, 12, bytes(48)), "absurd"),
        (("32FC1", 2, 2, 8, np.array([0.1, np.nan, 0.2, 0.3], np.float32).tobytes()), "NaN"),
    ],
)
def test_malformed_frames_raise_decode_error(conv, fields, fragment):
    msg = raw_image_msg(*fields, "f", _stamp())
    with pytest.raises(conv.ImageDecodeError, match=fragment):
        conv.to_rgb(msg, max_side=4096)


def test_malformed_compressed_raises(conv):
    for data in (b"", b"garbage!", b"\xff\xd8\xff\xe0" + bytes(10)):
        with pytest.raises(conv.ImageDecodeError):
            conv.to_rgb(compressed_msg(data, "jpeg", "f", _stamp()), max_side=4096)


def test_output_messages_round_trip(conv):
    from flowclas_ros.data.images.codec import decode_float, decode_image, decode_mono8
    from flowclas_ros.runtime.postprocess import Region

    header = image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8", "cam_frame", _stamp()).header
    rgb = textured_image(5, 7, seed=3)
    score = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    mask = (score > 0).astype(np.uint8) * 255
    m_rgb, m_score, m_mask = (
        conv.rgb8_image_msg(header, rgb),
        conv.float_image_msg(header, score),
        conv.mono8_image_msg(header, mask),
    )  # noqa: E501
    for m in (m_rgb, m_score, m_mask):
        assert m.header.frame_id == "cam_frame" and m.header.stamp.sec == 7 and m.header.stamp.nanosec == 9
        assert isinstance(m.data, array.array)
    np.testing.assert_array_equal(decode_image("rgb8", 5, 7, m_rgb.step, m_rgb.data), rgb)
    np.testing.assert_array_equal(decode_float("32FC1", 5, 7, m_score.step, m_score.data), score)
    np.testing.assert_array_equal(decode_mono8("mono8", 5, 7, m_mask.step, m_mask.data), mask)
    result = conv.result_msg(
        header,
        image_score=0.5,
        threshold=0.1,
        image_threshold=0.5,
        anomalous_fraction=0.25,
        regions=[Region(1, 2, 3, 4, 0.9, 0.7, 6)],
        latency_ms=12.0,
        backend="torch",
    )
    assert result.is_anomalous  # at the image threshold counts as anomalous
    assert (result.threshold, result.image_threshold) == (pytest.approx(0.1), 0.5)
    below = conv.result_msg(
        header, image_score=0.4, threshold=0.1, image_threshold=0.5, anomalous_fraction=0.25,
        regions=[], latency_ms=1.0, backend="torch",
    )  # fmt: skip
    assert not below.is_anomalous  # above the pixel threshold, below the image one: not anomalous
    region = result.regions[0]
    assert (region.x_offset, region.y_offset, region.width, region.height, region.area) == (1, 2, 3, 4, 6)
    assert region.peak_score == pytest.approx(0.9) and region.mean_score == pytest.approx(0.7)
