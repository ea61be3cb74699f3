"""sensor_msgs image conversion: every encoding vs OpenCV references, padding, malformed input."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from flowclas_ros.data.images.codec import (
    COLOR_ENCODINGS,
    ImageDecodeError,
    compressed_format_string,
    decode_compressed,
    decode_compressed_mono8,
    decode_float,
    decode_image,
    decode_mono8,
    encode_compressed,
    encode_float32,
    encode_image,
    encode_mono8,
)

H, W = 32, 40


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _gray_rgb(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


# Reference decoders: plain OpenCV on a contiguous copy of the unpadded buffer.
_BAYER = {"rggb": cv2.COLOR_BayerRGGB2RGB, "bggr": cv2.COLOR_BayerBGGR2RGB}
_BAYER |= {"gbrg": cv2.COLOR_BayerGBRG2RGB, "grbg": cv2.COLOR_BayerGRBG2RGB}


def _reference(encoding: str, rgb: np.ndarray) -> np.ndarray:
    if encoding in ("rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "8UC4", "rgb16", "bgr16", "rgba16", "bgra16"):
        return rgb  # lossless
    if encoding in ("mono8", "8UC1", "mono16", "32FC1"):
        return _gray_rgb(rgb)
    step, data = encode_image(rgb, encoding)
    plane = np.frombuffer(data, np.uint8).reshape(H, step)
    if encoding.startswith("bayer_"):
        return cv2.cvtColor(plane, _BAYER[encoding[6:10]])
    code = cv2.COLOR_YUV2RGB_UYVY if encoding in ("yuv422", "uyvy") else cv2.COLOR_YUV2RGB_YUY2
    return cv2.cvtColor(plane.reshape(H, W, 2), code)


@pytest.mark.parametrize("encoding", list(COLOR_ENCODINGS))
@pytest.mark.parametrize("padding", [0, 8])
def test_every_encoding_matches_opencv_reference(rgb, encoding, padding):
    step, data = encode_image(rgb, encoding, step_padding=padding)
    if padding:  # garbage in the padding must never leak into the image
        rows = np.frombuffer(data, np.uint8).reshape(H, step).copy()
        rows[:, step - padding :] = 0xAB
        data = rows.tobytes()
    out = decode_image(encoding, H, W, step, data)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, _reference(encoding, rgb))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_pattern_naming_with_constructed_mosaic(pattern):
    # A solid colour written into the mosaic by hand from the ROS pattern name.
    colour = {"r": 200, "g": 100, "b": 30}
    mosaic = np.empty((8, 8), np.uint8)
    for k, c in enumerate(pattern):
        mosaic[k // 2 :: 2, k % 2 :: 2] = colour[c]
    out = decode_image(f"bayer_{pattern}8", 8, 8, 8, mosaic.tobytes())
    assert out[2:6, 2:6].reshape(-1, 3).tolist() == [[200, 100, 30]] * 16


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_yuv_round_trip_on_smooth_image(encoding):
    smooth = np.zeros((H, W, 3), np.uint8)
    smooth[:, : W // 2] = (200, 40, 90)
    smooth[:, W // 2 :] = (20, 180, 240)
    step, data = encode_image(smooth, encoding)
    assert step == 2 * W
    out = decode_image(encoding, H, W, step, data)
    assert np.abs(out.astype(int) - smooth).max() <= 3


def test_bigendian_mono16_and_sample_order():
    values = np.array([[0, 257, 65535, 32896]], np.uint16)
    out = decode_image("mono16", 1, 4, 8, values.astype(">u2").tobytes(), is_bigendian=1)
    assert out[0, :, 0].tolist() == [0, 1, 255, 128]  # round(v * 255 / 65535)
    little = decode_image("mono16", 1, 4, 8, values.astype("<u2").tobytes(), is_bigendian=0)
    assert np.array_equal(out, little)


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8)],
)
def test_buffer_types(rgb, wrap):
    step, data = encode_image(rgb, "bgr8")
    assert np.array_equal(decode_image("bgr8", H, W, step, wrap(data)), rgb)


def test_rgb8_view_and_copy(rgb):
    step, data = encode_image(rgb, "rgb8")
    view = decode_image("rgb8", H, W, step, data)
    assert not view.flags.writeable  # zero-copy view of immutable bytes
    owned = decode_image("rgb8", H, W, step, data, copy=True)
    assert owned.flags.writeable and owned.flags.owndata and np.array_equal(owned, rgb)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("bgr8", H, W, W * 3 - 1, bytes(H * W * 3)), "step 119 is smaller than width"),
        (("bgr8", H, W, W * 3, bytes(H * W * 3 - 1)), "truncated data"),
        (("xyz16", H, W, W * 3, bytes(H * W * 3)), "unsupported image encoding 'xyz16'"),
        (("16UC1", H, W, W * 2, bytes(H * W * 2)), "use decode_float"),
        (("rgb8", 0, W, W * 3, b""), "zero-size"),
        (("rgb8", H, -1, W * 3, b""), "zero-size"),
        (("rgb8", 20000, 10, 30, b""), "absurd image size"),
        (("mono8", 11000, 11000, 11000, b""), "absurd image size"),
        (("mono16", H, W, W * 2 + 1, bytes((W * 2 + 1) * H)), "not a multiple of the sample size"),
        (("yuv422", H, W - 1, W * 2, bytes(H * W * 2)), "must be even"),
        (("rgb8", H, W, 3.5, b""), "step must be an int"),
        (("rgb8", "32", W, W * 3, b""), "height must be an int"),
    ],
)
def test_malformed_raw_images(args, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(*args)


def test_nan_in_model_image_is_an_error_but_allowed_in_float_maps():
    img = np.full((H, W), 0.5, np.float32)
    img[3, 4] = np.nan
    step, data = encode_float32(img)
    with pytest.raises(ImageDecodeError, match="NaN"):
        decode_image("32FC1", H, W, step, data)
    depth = decode_float("32FC1", H, W, step, data)
    assert np.isnan(depth[3, 4]) and depth[0, 0] == 0.5
    with pytest.raises(ImageDecodeError, match="NaN"):
        decode_float("32FC1", H, W, step, data, allow_nan=False)


def test_decode_float_encodings():
    mm = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 7
    out = decode_float("16UC1", H, W, W * 2 + 4, np.pad(mm.view(np.uint8), ((0, 0), (0, 4))).tobytes())
    assert out.dtype == np.float32 and np.array_equal(out, mm.astype(np.float32))  # unscaled
    f64 = np.linspace(-3, 3, H * W).reshape(H, W)
    assert np.allclose(decode_float("64FC1", H, W, W * 8, f64.astype(">f8").tobytes(), is_bigendian=1), f64)
    with pytest.raises(ImageDecodeError, match="unsupported float image encoding 'rgb8'"):
        decode_float("rgb8", H, W, W * 3, bytes(H * W * 3))


def test_mono8_and_float_encoders():
    mask = np.random.default_rng(1).choice(np.array([0, 1, 255], np.uint8), (H, W))
    step, data = encode_mono8(mask)
    assert step == W and np.array_equal(decode_mono8("mono8", H, W, step, data), mask)
    with pytest.raises(ImageDecodeError, match="mono8 or 8UC1"):
        decode_mono8("rgb8", H, W, step, data)
    score = np.random.default_rng(2).random((H, W)).astype(np.float32)
    step, data = encode_float32(score)
    assert step == 4 * W and np.array_equal(decode_float("32FC1", H, W, step, data), score)
    with pytest.raises(ValueError, match="uint8"):
        encode_mono8(score)


@pytest.mark.parametrize(
    "fmt",
    [
        "jpeg",
        "png",
        "rgb8; jpeg compressed bgr8",
        "bgr8; png compressed bgr8",
        "JPEG",
        "rgb8; png compressed bgr8",
    ],
)
def test_compressed_round_trip(rgb, fmt):
    kind = "png" if "png" in fmt.lower() else "jpeg"
    out = decode_compressed(fmt, encode_compressed(rgb, kind, quality=100))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    if kind == "png":
        assert np.array_equal(out, rgb)
    else:  # reference: OpenCV's own decode of the same stream
        ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode_compressed(rgb, "jpeg", 100), np.uint8), 1), 4)
        assert np.array_equal(out, ref)


def test_compressed_variants(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = decode_compressed("mono8; png compressed", encode_compressed(gray, "png"))
    assert np.array_equal(out, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))
    # A stream that stores RGB order (declared "compressed rgb8") is not swapped.
    ok, raw_rgb_png = cv2.imencode(".png", rgb)
    assert ok and np.array_equal(decode_compressed("rgb8; png compressed rgb8", raw_rgb_png.tobytes()), rgb)
    ok, png16 = cv2.imencode(".png", gray.astype(np.uint16) * 257)
    assert np.array_equal(decode_compressed("mono16; png compressed mono16", png16.tobytes())[..., 0], gray)
    assert compressed_format_string("jpg") == "rgb8; jpeg compressed bgr8"
    mask = (gray > 128).astype(np.uint8)
    assert np.array_equal(decode_compressed_mono8("png", encode_compressed(mask, "png")), mask)
    with pytest.raises(ImageDecodeError, match="must be PNG"):
        decode_compressed_mono8("jpeg", encode_compressed(rgb, "jpeg"))
    with pytest.raises(ImageDecodeError, match="single-channel"):
        decode_compressed_mono8("png", encode_compressed(rgb, "png"))


def _png_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode_compressed(np.zeros((4, 4, 3), np.uint8), "png"))
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    return bytes(data)


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode_compressed(np.zeros((16, 16, 3), np.uint8), "jpeg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(
    ("fmt", "data", "match"),
    [
        ("jpeg", b"", "empty compressed image"),
        ("jpeg", b"GIF89a....", "neither JPEG nor PNG"),
        ("jpeg", b"\xff\xd8" + bytes(100), "undecodable jpeg"),
        ("png", b"\x89PNG\r\n\x1a\n" + bytes(40), "undecodable png"),
        ("png", _png_with_size(100000, 100000), "absurd image size"),
        ("jpeg", _jpeg_with_size(60000, 2), "absurd image size"),
        ("jpeg", _jpeg_with_size(0, 16), "zero-size"),
        ("16UC1; compressedDepth png", b"\x89PNG", "compressedDepth"),
        (None, b"\x89PNG", "format must be a string"),
    ],
)
def test_malformed_compressed(fmt, data, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_compressed(fmt, data)


def test_encoder_input_validation(rgb):
    with pytest.raises(ValueError, match="cannot encode"):
        encode_image(rgb, "nope")
    with pytest.raises(ValueError, match="even width"):
        encode_image(rgb[:, :-1], "yuyv")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encode_image(rgb.astype(np.float32), "rgb8")
    with pytest.raises(ValueError, match="jpeg' or 'png"):
        encode_compressed(rgb, "bmp")
