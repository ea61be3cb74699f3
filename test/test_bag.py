"""rosbag2 IO: flowclas-bag writer, frame reader, stamp pairing, damaged bags, CLI."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_support import header, image_msg, mono_msg, write_bag
from rosbags.rosbag2 import StoragePlugin, Writer

from flowclas_ros.data.bags.cli import main as bag_main
from flowclas_ros.data.bags.frames import (
    BagError,
    BagReadStats,
    BagReadWarning,
    iter_bag_frames,
    write_bag_from_folder,
)
from flowclas_ros.data.bags.pairing import pair_by_stamp, stamp_mask_name
from flowclas_ros.data.bags.source import COMPRESSED_TYPE, IMAGE_TYPE, typestore
from flowclas_ros.data.bags.writer import DEFAULT_START_NS
from flowclas_ros.data.images.codec import (
    COLOR_ENCODINGS,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
)

H, W = 32, 40
IMG, MASK = "/camera/image_raw", "/camera/anomaly_mask"
LOSSLESS = {"rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "8UC4", "rgb16", "bgr16", "rgba16", "bgra16", "png"}


def _make_dataset(root: Path, n: int, missing_masks: tuple[int, ...] = ()) -> tuple[list, list]:
    rng = np.random.default_rng(n)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    images, masks = [], []
    for i in range(n):
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"s{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        mask = np.zeros((H, W), np.uint8)
        mask[i % 20 : i % 20 + 6, 4:12] = 1
        mask[0, :] = 255
        images.append(img)
        if i in missing_masks:
            masks.append(None)
            continue
        cv2.imwrite(str(root / "masks" / f"s{i:03d}.png"), mask)
        masks.append(mask)
    return images, masks


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    images, masks = _make_dataset(root, 6, missing_masks=(2, 5))
    return root, images, masks


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    images, masks = _make_dataset(root, 40)
    return root, images, masks


def _expected_image(img: np.ndarray, encoding: str) -> np.ndarray:
    """What the bag should give back: exact for lossless encodings, else one codec round trip."""
    if encoding in LOSSLESS:
        return img
    if encoding == "jpeg":
        return decode_compressed("jpeg", encode_compressed(img, "jpeg", 95))
    step, data = encode_image(img, encoding)
    return decode_image(encoding, H, W, step, data)


def _read(bag, **kw) -> tuple[list, BagReadStats]:
    stats = BagReadStats()
    frames = list(iter_bag_frames(bag, IMG, kw.pop("mask_topic", MASK), stats=stats, **kw))
    return frames, stats


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("encoding", [*COLOR_ENCODINGS, "jpeg", "png"])
def test_round_trip_every_encoding(dataset, tmp_path, storage, encoding):
    root, images, masks = dataset
    summary = write_bag_from_folder(root, tmp_path / "bag", encoding=encoding, storage=storage, rate_hz=20)
    assert (summary.n_images, summary.n_masks) == (6, 4)
    frames, stats = _read(tmp_path / "bag")
    assert [f.index for f in frames] == list(range(6))
    for f, img, mask in zip(frames, images, masks):
        assert f.stamp_ns == DEFAULT_START_NS + f.index * 50_000_000 and f.frame_id == "camera"
        assert f.image.flags.writeable and np.array_equal(f.image, _expected_image(img, encoding))
        if mask is None:
            assert f.mask is None and f.mask_match is None
        else:
            assert np.array_equal(f.mask, mask) and f.mask_match == "exact"
    assert (stats.n_frames, stats.n_paired_exact, stats.n_unpaired, stats.n_masks_unused) == (6, 4, 2, 0)
    assert stats.max_buffered <= 1 and not stats.problems and not stats.salvage


def test_images_only_bag_and_topic_errors(dataset, tmp_path):
    root, images, _ = dataset
    write_bag_from_folder(root, tmp_path / "bag", mask_topic=None, storage="mcap")
    frames, stats = _read(tmp_path / "bag", mask_topic=None)
    assert len(frames) == 6 and all(f.mask is None for f in frames) and stats.n_unpaired == 0
    with pytest.raises(
        BagError, match=r"'/nope' is not in bag .*/camera/image_raw \(sensor_msgs/msg/Image\)"
    ):
        list(iter_bag_frames(tmp_path / "bag", "/nope"))
    with pytest.raises(BagError, match="does not exist"):
        list(iter_bag_frames(tmp_path / "missing", IMG))
    with pytest.raises(ValueError, match="not both"):
        iter_bag_frames(tmp_path / "bag", IMG, MASK, tmp_path)


def test_nearest_stamp_pairing_and_late_masks(tmp_path):
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(6)]
    stamps = [10**12 + i * 100_000_000 for i in range(6)]
    masks = [np.full((H, W), i % 2, np.uint8) for i in range(6)]
    offsets = {0: 0, 1: 3_000_000, 2: -4_000_000, 3: 40_000_000, 5: 0}  # frame 4: no mask; 3: too far
    entries = [(IMG, s, image_msg(s, im)) for s, im in zip(stamps, imgs)]
    # Masks logged 10 s after all images (as an offline labeller would), and one orphan mask.
    entries += [
        (MASK, stamps[-1] + 10**10 + i, mono_msg(stamps[i] + off, masks[i])) for i, off in offsets.items()
    ]
    entries += [(MASK, stamps[-1] + 2 * 10**10, mono_msg(5 * 10**12, masks[0]))]
    write_bag(tmp_path / "bag", entries, storage="mcap")
    frames, stats = _read(tmp_path / "bag", stamp_tolerance_s=0.01)
    by_index = {f.index: f for f in frames}
    assert sorted(by_index) == list(range(6))
    assert [by_index[i].mask_match for i in range(6)] == ["exact", "nearest", "nearest", None, None, "exact"]
    for i in (0, 1, 2, 5):
        assert np.array_equal(by_index[i].mask, masks[i]) and np.array_equal(by_index[i].image, imgs[i])
    assert (stats.n_paired_exact, stats.n_paired_nearest, stats.n_unpaired) == (2, 2, 2)
    assert stats.n_mask_messages == 6 and stats.n_masks_unused == 2  # the 40 ms one and the orphan
    assert stats.max_buffered >= 4  # images waited for their late masks
    frames, stats = _read(tmp_path / "bag", stamp_tolerance_s=0.0)  # exact only
    assert (stats.n_paired_exact, stats.n_paired_nearest, stats.n_unpaired) == (2, 0, 4)


def test_pair_by_stamp_rules():
    # Exact matches first: image 10 must not take mask 10 just because it is nearest to image 8.
    assert pair_by_stamp([8, 10], [10], tolerance_ns=5) == [(None, None), (0, "exact")]
    # Each mask is used once; nearest, earlier mask on a tie.
    assert pair_by_stamp([10, 11], [9, 12], tolerance_ns=2) == [(0, "nearest"), (1, "nearest")]
    assert pair_by_stamp([10], [8, 12], tolerance_ns=2) == [(0, "nearest")]
    assert pair_by_stamp([10, 10], [10], tolerance_ns=0) == [(0, "exact"), (None, None)]
    assert pair_by_stamp([10], [13], tolerance_ns=2) == [(None, None)]


@pytest.mark.parametrize("naming", ["stamp", "index"])
def test_mask_dir(dataset, tmp_path, naming):
    root, images, masks = dataset
    write_bag_from_folder(root, tmp_path / "bag", mask_topic=None, rate_hz=10)
    (tmp_path / "m").mkdir()
    for i, mask in enumerate(masks):
        if mask is not None:
            stamp = DEFAULT_START_NS + i * 100_000_000
            name = stamp_mask_name(stamp) if naming == "stamp" else f"{i:06d}.png"
            cv2.imwrite(str(tmp_path / "m" / name), mask)
    (tmp_path / "m" / "notes.txt").write_text("ignored")
    stats = BagReadStats()
    frames = list(
        iter_bag_frames(tmp_path / "bag", IMG, mask_dir=tmp_path / "m", mask_dir_naming=naming, stats=stats)
    )
    for f in frames:
        assert (f.mask is None) == (masks[f.index] is None)
        if f.mask is not None:
            assert np.array_equal(f.mask, masks[f.index])
    assert (stats.n_frames, stats.n_unpaired) == (6, 2)


def test_bad_frames_are_counted_not_fatal(tmp_path, caplog):
    rgb = np.zeros((H, W, 3), np.uint8)
    good_step, good = encode_image(rgb, "rgb8")
    bad_mask = np.full((H, W), 7, np.uint8)
    entries = [
        (IMG, 1, image_msg(1, rgb)),
        (IMG, 2, image_msg(2, rgb, step=good_step - 1, data=good)),  # step too small
        (IMG, 3, image_msg(3, rgb, encoding="weird8", step=good_step, data=good)),
        (IMG, 4, image_msg(4, rgb)),
        (MASK, 4, mono_msg(4, bad_mask)),  # values outside 0/1/255
        (MASK, 1, mono_msg(1, np.zeros((H, W), np.uint8))),
    ]
    write_bag(tmp_path / "bag", entries)
    with caplog.at_level(logging.WARNING):
        frames, stats = _read(tmp_path / "bag")
    assert [f.stamp_ns for f in frames] == [1, 4]
    assert (stats.n_decode_errors, stats.n_mask_errors, stats.n_unpaired, stats.n_paired_exact) == (
        2,
        1,
        1,
        1,
    )
    assert "step 119 is smaller" in caplog.text and "weird8" in caplog.text and "found [7]" in caplog.text


def _damage(bag: Path, how: str) -> None:
    storage_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data = bytearray(storage_file.read_bytes())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:  # overwrite a block in the middle
        mid = len(data) // 2
        data[mid : mid + 3000] = b"\xff" * 3000
    storage_file.write_bytes(bytes(data))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("how", ["truncate", "overwrite"])
def test_damaged_bag_gives_partial_frames_and_warning(big_dataset, tmp_path, storage, how):
    root, images, masks = big_dataset
    write_bag_from_folder(root, tmp_path / "bag", storage=storage)
    _damage(tmp_path / "bag", how)
    with pytest.warns(BagReadWarning, match="damaged"):
        frames, stats = _read(tmp_path / "bag")
    assert 5 <= len(frames) < 40
    assert stats.salvage and stats.problems and stats.n_frames == len(frames)
    exact = 0
    for f in frames:
        i = round((f.stamp_ns - DEFAULT_START_NS) / 1e8)  # 10 Hz
        exact += np.array_equal(f.image, images[i])
        if f.mask is not None:
            assert np.array_equal(f.mask, masks[i])
    # Without checksums a record hit in place may keep garbage pixels; everything else is exact.
    assert exact >= len(frames) - (how == "overwrite")
    if how == "truncate":
        assert [f.index for f in frames] == list(range(len(frames)))


def test_bare_storage_file_and_metadata_loss(big_dataset, tmp_path):
    root, images, _ = big_dataset
    write_bag_from_folder(root, tmp_path / "bag", storage="sqlite3")
    (tmp_path / "bag" / "metadata.yaml").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # intact storage: no damage warning
        frames, stats = _read(tmp_path / "bag")
    assert len(frames) == 40 and stats.salvage and stats.n_paired_exact == 40


def test_writer_rejects_bad_input(dataset, tmp_path):
    root, _, _ = dataset
    with pytest.raises(FileExistsError):
        write_bag_from_folder(root, root)
    with pytest.raises(ValueError, match="unknown encoding"):
        write_bag_from_folder(root, tmp_path / "x", encoding="h264")
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    cv2.imwrite(str(bad / "masks" / "s003.png"), np.full((H, W), 9, np.uint8))
    with pytest.raises(ValueError, match=r"s003.png: mask values \[9\]"):
        write_bag_from_folder(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written left behind
    odd = tmp_path / "odd"
    (odd / "images").mkdir(parents=True)
    cv2.imwrite(str(odd / "images" / "a.png"), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="a.png: yuv422 needs an even width"):
        write_bag_from_folder(odd, tmp_path / "out", encoding="yuv422")


def test_cli(dataset, tmp_path, capsys):
    root, images, _ = dataset
    out = tmp_path / "bag"
    assert bag_main(["--data", str(root), "--out", str(out), "--encoding", "png", "--storage", "mcap"]) == 0
    assert "6 images" in capsys.readouterr().out
    frames, _ = _read(out)
    assert frames[0].encoding == "rgb8; png compressed bgr8" and np.array_equal(frames[0].image, images[0])
    assert bag_main(["--data", str(root), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowclas-bag: error:") and "already exists" in err and "\n" not in err
    assert bag_main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b2")]) == 1
    assert "images" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bag_main(["--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit) as exc:
        bag_main(["--data", str(root), "--out", str(tmp_path / "b3"), "--encoding", "h264"])
    assert exc.value.code == 2


def test_compressed_mask_topic(tmp_path):
    rgb = np.full((H, W, 3), 50, np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[3:9, 3:9] = 1
    types = typestore().types
    png = types[COMPRESSED_TYPE](
        header=header(7), format="png", data=np.frombuffer(encode_compressed(mask, "png"), np.uint8)
    )
    write_bag(tmp_path / "bag", [(IMG, 7, image_msg(7, rgb)), (MASK, 7, png)])
    frames, stats = _read(tmp_path / "bag")
    assert np.array_equal(frames[0].mask, mask) and stats.n_paired_exact == 1


def test_truncated_zstd_compressed_mcap(tmp_path):
    from rosbags.rosbag2 import CompressionFormat, CompressionMode

    rng = np.random.default_rng(9)
    imgs = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(30)]
    ts = typestore()
    writer = Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)  # zstd chunks
    with writer:
        conn = writer.add_connection(IMG, IMAGE_TYPE, typestore=ts)
        for i, img in enumerate(imgs):
            writer.write(conn, i + 1, ts.serialize_cdr(image_msg(i + 1, img), IMAGE_TYPE))
    _damage(tmp_path / "bag", "truncate")
    with pytest.warns(BagReadWarning, match="chunk is cut short"):
        frames, stats = _read(tmp_path / "bag", mask_topic=None)
    assert 5 <= len(frames) < 30 and stats.salvage
    assert all(np.array_equal(f.image, imgs[f.stamp_ns - 1]) for f in frames)
