"""MCAP salvage on files written by the mcap package: every chunk compression, cut and corrupted files.

rosbags writes only uncompressed or zstd chunks; these files also cover lz4 chunks, several
chunks per file and a chunk with a bad CRC. The payloads are opaque bytes: salvage never
decodes them, so each message's bytes identify it.
"""

from __future__ import annotations

import io
import random

import pytest
from mcap.reader import SeekingReader
from mcap.writer import CompressionType, Writer

from flowclas_ros.data.bags.salvage import mcap_messages

TOPIC, OTHER = "/camera/image_raw", "/other"
N = 60


def _payload(i: int) -> bytes:
    """10 kB: the index, then noise, so a compressed chunk spans several zstd / lz4 blocks.

    A cut chunk gives up the messages of its complete blocks; a cut inside the first
    block (64 kB lz4, 128 kB zstd) leaves nothing to decode.
    """
    return i.to_bytes(4, "little") + random.Random(i).randbytes(10_000 - 4)


def _write(path, compression: CompressionType, chunk_size: int = 100_000) -> bytes:
    buf = io.BytesIO()
    writer = Writer(buf, chunk_size=chunk_size, compression=compression)
    writer.start()
    schema = writer.register_schema("sensor_msgs/msg/Image", "ros2msg", b"")
    cam = writer.register_channel(TOPIC, "cdr", schema)
    other = writer.register_channel(OTHER, "cdr", schema)
    for i in range(N):
        writer.add_message(cam, log_time=i + 1, data=_payload(i), publish_time=i + 1)
        writer.add_message(other, log_time=i + 1, data=b"x", publish_time=i + 1)
    writer.finish()
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _salvage(path) -> tuple[list, list[str]]:
    problems: list[str] = []
    return list(mcap_messages(path, {TOPIC}, problems)), problems


@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.LZ4, CompressionType.ZSTD])
def test_intact_file_gives_every_message_without_problems(tmp_path, compression):
    path = tmp_path / "bag.mcap"
    _write(path, compression)
    messages, problems = _salvage(path)
    assert problems == []
    assert messages == [(TOPIC, "sensor_msgs/msg/Image", i + 1, _payload(i)) for i in range(N)]


@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.LZ4, CompressionType.ZSTD])
def test_truncated_file_keeps_the_complete_messages_of_the_cut_chunk(tmp_path, compression):
    path = tmp_path / "bag.mcap"
    data = _write(path, compression, chunk_size=1 << 30)  # one chunk: only its complete messages survive
    path.write_bytes(data[: len(data) // 2])
    messages, problems = _salvage(path)
    assert 5 <= len(messages) < N
    assert [m[3] for m in messages] == [_payload(i) for i in range(len(messages))]
    assert any("no intact footer" in p for p in problems)
    assert any("chunk is cut short" in p for p in problems)


def _chunk_offsets(path) -> list[int]:
    with path.open("rb") as fh:
        return sorted(c.chunk_start_offset for c in SeekingReader(fh).get_summary().chunk_indexes)


def test_unreadable_chunk_in_an_indexed_file_loses_only_that_chunk(tmp_path):
    path = tmp_path / "bag.mcap"
    data = bytearray(_write(path, CompressionType.LZ4))
    offsets = _chunk_offsets(path)
    assert len(offsets) >= 4
    name_at = offsets[2] + 9 + 8 + 8 + 8 + 4 + 4  # record header, times, size, crc, name length
    assert data[name_at : name_at + 3] == b"lz4"
    data[name_at : name_at + 3] = b"xz9"  # the footer and summary stay intact
    path.write_bytes(bytes(data))
    messages, problems = _salvage(path)
    kept = [int.from_bytes(m[3][:4], "little") for m in messages]
    assert 0 < len(kept) < N and kept == sorted(kept) and set(range(kept[-1] + 1)) - set(kept)
    assert all(m[3] == _payload(i) for m, i in zip(messages, kept))
    assert problems == [
        "bag.mcap: corrupt record inside a chunk (unsupported compression type xz9); rest of chunk skipped"
    ]


def test_chunk_crc_mismatch_is_reported_and_its_messages_kept(tmp_path):
    path = tmp_path / "bag.mcap"
    data = bytearray(_write(path, CompressionType.NONE))
    middle = _chunk_offsets(path)[1] + 3000  # inside a message payload of the second chunk
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))
    messages, problems = _salvage(path)
    assert len(messages) == N
    assert sum(m[3] != _payload(i) for i, m in enumerate(messages)) == 1
    assert problems == ["bag.mcap: chunk CRC mismatch; its messages may hold corrupt bytes"]


def test_not_an_mcap_file_is_one_problem(tmp_path):
    path = tmp_path / "bag.mcap"
    path.write_bytes(b"SQLite format 3\x00")
    assert _salvage(path) == ([], ["bag.mcap: empty or not an MCAP file (bad magic)"])
