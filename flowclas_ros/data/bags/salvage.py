"""Read what is left of a truncated or partly corrupt rosbag2 storage file.

rosbags refuses a whole bag when any part of it is damaged (a truncated
sqlite3 file fails at open, an MCAP file without its footer too). These
readers recover every message that is still intact:

* **sqlite3**: the standard library's sqlite3, read-only and immutable, with
  ``PRAGMA writable_schema=ON``: SQLite itself then accepts a header page
  count larger than the file (a truncated file) instead of refusing it.
  Messages are read by row id in blocks; a block that hits a corrupt page is
  re-read row by row and only the unreadable rows are lost.
* **MCAP**: the ``mcap`` package parses the records. With an intact footer,
  chunks are located through the summary's chunk index (each chunk then fails
  alone), else records are read forward with its ``StreamReader`` until the
  first truncated or corrupt one. Kept here, because mcap decompresses a chunk
  whole or not at all: a cut or corrupt chunk is decompressed as far as its
  bytes go and gives up its complete messages (uncompressed, zstd or lz4).

Both yield ``(topic, msgtype, log_time_ns, raw_cdr)`` in file order and
append human-readable problems to a list; they never raise on damage after
the file's table of topics has been read.
"""

from __future__ import annotations

import io
import sqlite3
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import lz4.frame
import zstandard
from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError, UnsupportedCompressionError
from mcap.opcode import Opcode
from mcap.reader import SeekingReader
from mcap.records import Channel, Chunk, DataEnd, Footer, McapRecord, Message, Schema
from mcap.stream_reader import MAGIC_SIZE, StreamReader

RawMessage = tuple[str, str, int, bytes]

_BLOCK = 256


def _connect(db_path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    con.execute("PRAGMA writable_schema=ON")  # tolerate a page count beyond the end of the file
    return con


def sqlite_topics(db_path: Path) -> dict[str, str]:
    """Topic name -> type from a (possibly damaged) rosbag2 sqlite3 file; empty if unreadable."""
    try:
        con = _connect(db_path)
        try:
            return {name: typ for name, typ in con.execute("SELECT name, type FROM topics")}
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def sqlite_messages(
    db_path: Path, topics: set[str], expected: int, problems: list[str]
) -> Iterator[RawMessage]:
    """Salvage messages of ``topics`` from a (possibly damaged) rosbag2 sqlite3 file.

    Args:
        db_path: The ``.db3`` file.
        topics: Topic names to read.
        expected: Message count from metadata.yaml (0 if unknown); bounds the row ids.
        problems: Receives one line per kind of damage found.

    Raises:
        sqlite3.Error: The topics table itself cannot be read (nothing is recoverable).
    """
    con = _connect(db_path)
    try:
        table = {tid: (name, typ) for tid, name, typ in con.execute("SELECT id, name, type FROM topics")}
        wanted = [tid for tid, (name, _) in table.items() if name in topics]
        if not wanted:
            return
        upper = expected
        try:
            upper = max(upper, con.execute("SELECT max(id) FROM messages").fetchone()[0] or 0)
        except sqlite3.Error:
            pass  # the index's right edge is damaged; rely on metadata or probing
        where = f"topic_id IN ({','.join(str(t) for t in wanted)})"
        sql = (
            f"SELECT topic_id, timestamp, data FROM messages WHERE id BETWEEN ? AND ? AND {where} ORDER BY id"
        )
        lost, empty_blocks, start = 0, 0, 1
        # Without a known upper bound, probe until 8 blocks in a row gave nothing.
        while start <= upper if upper else empty_blocks < 8:
            stop = start + _BLOCK - 1
            try:
                rows = con.execute(sql, (start, stop)).fetchall()
            except sqlite3.Error:
                rows = []
                for row_id in range(start, stop + 1):
                    try:
                        rows += con.execute(sql, (row_id, row_id)).fetchall()
                    except sqlite3.Error:
                        lost += 1
            empty_blocks = 0 if rows else empty_blocks + 1
            for tid, stamp, data in rows:
                yield table[tid][0], table[tid][1], int(stamp), bytes(data)
            start = stop + 1
        if lost:
            problems.append(f"{db_path.name}: {lost} message rows unreadable (corrupt or truncated pages)")
    finally:
        con.close()


# ----------------------------------------------------------------------------- MCAP

_MAGIC = b"\x89MCAP0\r\n"
# What mcap's record readers raise on garbage bytes (it does not wrap them in McapError).
_DAMAGE = (McapError, ValueError, struct.error, UnicodeDecodeError, IndexError)
_CHUNK_RECORDS = {
    Opcode.SCHEMA: lambda stream, _: Schema.read(stream),
    Opcode.CHANNEL: lambda stream, _: Channel.read(stream),
    Opcode.MESSAGE: Message.read,
}


def _decompress(chunk: Chunk) -> bytes:
    """A chunk's records, as far as its (possibly cut) data goes: streaming decoders take a cut frame."""
    try:
        if chunk.compression == "":
            return chunk.data
        if chunk.compression == "zstd":
            return zstandard.ZstdDecompressor().decompressobj().decompress(chunk.data)
        if chunk.compression == "lz4":
            return lz4.frame.LZ4FrameDecompressor().decompress(chunk.data)
    except Exception as err:  # noqa: BLE001 - each codec has its own error types
        raise McapError(f"{chunk.compression} decompression failed: {err}") from err
    raise UnsupportedCompressionError(chunk.compression)


class _McapScan:
    """Schema/channel tables and message extraction shared by the indexed and forward scans."""

    def __init__(self, topics: set[str], problems: list[str], name: str) -> None:
        self.topics, self.problems, self.name = topics, problems, name
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, int]] = {}

    def record(self, record: McapRecord) -> Iterator[RawMessage]:
        if isinstance(record, Schema):
            self.schemas[record.id] = record.name
        elif isinstance(record, Channel):
            self.channels[record.id] = (record.topic, record.schema_id)
        elif isinstance(record, Message):
            channel = self.channels.get(record.channel_id)
            if channel is not None and channel[0] in self.topics:
                yield channel[0], self.schemas.get(channel[1], ""), record.log_time, bytes(record.data)
        elif isinstance(record, Chunk):
            yield from self.chunk(record)

    def chunk(self, chunk: Chunk, cut: bool = False) -> Iterator[RawMessage]:
        """Messages of one chunk, up to its first cut or corrupt record; ``cut``: the file ends inside it."""
        complete = not cut
        try:
            data = _decompress(chunk)
            complete &= len(data) >= chunk.uncompressed_size
            stream = ReadDataStream(io.BytesIO(data))
            while stream.count + 9 <= len(data):
                op, length = stream.read1(), stream.read8()
                if stream.count + length > len(data):
                    complete = False
                    break
                body = ReadDataStream(io.BytesIO(stream.read(length) if length else b""))
                if op in _CHUNK_RECORDS:
                    yield from self.record(_CHUNK_RECORDS[op](body, length))
        except _DAMAGE as err:
            complete = False
            self.problems.append(f"{self.name}: corrupt record inside a chunk ({err}); rest of chunk skipped")
            return
        if not complete:
            self.problems.append(
                f"{self.name}: a chunk is cut short or corrupt; its complete messages were kept"
            )
        elif chunk.uncompressed_crc and zlib.crc32(data) != chunk.uncompressed_crc:
            self.problems.append(f"{self.name}: chunk CRC mismatch; its messages may hold corrupt bytes")


def _chunk_offsets(fh: BinaryIO, scan: _McapScan, size: int) -> list[int] | None:
    """Chunk offsets from the summary section (its schemas and channels go to ``scan``), or None."""
    try:
        fh.seek(0)
        summary = SeekingReader(fh, record_size_limit=size).get_summary()
    except (*_DAMAGE, OSError):  # OSError: a file shorter than a footer
        return None
    if summary is None or not summary.chunk_indexes:
        return None
    scan.schemas.update({sid: schema.name for sid, schema in summary.schemas.items()})
    scan.channels.update({cid: (ch.topic, ch.schema_id) for cid, ch in summary.channels.items()})
    return sorted(index.chunk_start_offset for index in summary.chunk_indexes)


def _chunk_at(fh: BinaryIO, offset: int, size: int) -> tuple[Chunk, bool]:
    """The chunk record at ``offset`` and whether the file ends inside it."""
    fh.seek(offset)
    stream = ReadDataStream(fh)
    op, length = stream.read1(), stream.read8()
    if op != Opcode.CHUNK:
        raise McapError(f"expected a chunk at offset {offset}, found opcode 0x{op:02x}")
    return Chunk.read(stream), offset + 9 + length > size


def mcap_messages(path: Path, topics: set[str], problems: list[str]) -> Iterator[RawMessage]:
    """Salvage messages of ``topics`` from a (possibly damaged) MCAP file."""
    name = path.name
    with path.open("rb") as fh:
        size = path.stat().st_size
        if fh.read(MAGIC_SIZE) != _MAGIC:
            problems.append(f"{name}: empty or not an MCAP file (bad magic)")
            return
        scan = _McapScan(topics, problems, name)
        offsets = _chunk_offsets(fh, scan, size)
        if offsets is not None:  # indexed: every chunk stands alone
            for offset in offsets:
                try:
                    chunk, cut = _chunk_at(fh, offset, size)
                except _DAMAGE as err:
                    problems.append(f"{name}: chunk at offset {offset} unreadable ({err}); skipped")
                    continue
                yield from scan.chunk(chunk, cut)
            return
        problems.append(f"{name}: no intact footer/summary; scanning forward (file truncated?)")
        fh.seek(0)
        end = MAGIC_SIZE  # end of the last complete top-level record
        try:
            # No size limit: a cut record is longer than what is left; reads stop at the file's end.
            for record in StreamReader(fh, emit_chunks=True, record_size_limit=None).records:
                if isinstance(record, (DataEnd, Footer)):
                    return
                yield from scan.record(record)
                end = fh.tell()
        except _DAMAGE as err:
            if fh.tell() < size:
                problems.append(f"{name}: stopped at corrupt data ({err}); later messages are lost")
                return
            problems.append(f"{name}: file ends inside a record (truncated)")
        try:  # a cut chunk still holds complete messages
            chunk, _ = _chunk_at(fh, end, size)
        except _DAMAGE:
            return
        yield from scan.chunk(chunk, cut=True)
