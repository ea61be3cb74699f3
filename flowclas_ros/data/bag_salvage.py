"""Read what is left of a truncated or partly corrupt rosbag2 storage file.

rosbags refuses a whole bag when any part of it is damaged (a truncated
sqlite3 file fails at open, an MCAP file without its footer too). These
readers recover every message that is still intact:

* **sqlite3**: opened read-only through an apsw VFS that corrects the page
  count in the file header to the real file size, then messages are read by
  row id in blocks; a block that hits a corrupt page is re-read row by row
  and only the unreadable rows are lost.
* **MCAP**: chunks are located through the summary's chunk index when the
  footer is intact (each chunk then fails alone), else by a forward scan
  that stops at the first corrupt top-level record. A truncated chunk gives
  up its complete messages (uncompressed, zstd or lz4 chunks).

Both yield ``(topic, msgtype, log_time_ns, raw_cdr)`` in file order and
append human-readable problems to a list; they never raise on damage after
the file's table of topics has been read.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import apsw

RawMessage = tuple[str, str, int, bytes]

_VFS_NAME = "flowclas_salvage"
_vfs: apsw.VFS | None = None
_BLOCK = 256


class _HeaderFixFile(apsw.VFSFile):
    """A database file whose header page count is taken from the real file size."""

    def xRead(self, amount: int, offset: int) -> bytes:  # noqa: N802 - apsw API name
        """Read, patching the in-header database size when page 1 is read."""
        data = super().xRead(amount, offset)
        if offset == 0 and len(data) >= 32:
            page_size = struct.unpack(">H", data[16:18])[0]
            page_size = 65536 if page_size == 1 else page_size
            pages = super().xFileSize() // max(page_size, 512)
            data = data[:28] + struct.pack(">I", pages) + data[32:]
        return data


class _HeaderFixVFS(apsw.VFS):
    def __init__(self) -> None:
        super().__init__(_VFS_NAME, base="")

    def xOpen(self, name: object, flags: list[int]) -> apsw.VFSFile:  # noqa: N802 - apsw API name
        return _HeaderFixFile("", name, flags)


def _connect(db_path: Path) -> apsw.Connection:
    global _vfs
    if _vfs is None:
        _vfs = _HeaderFixVFS()  # registered once per process
    return apsw.Connection(
        f"file:{db_path}?immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI, vfs=_VFS_NAME
    )


def sqlite_topics(db_path: Path) -> dict[str, str]:
    """Topic name -> type from a (possibly damaged) rosbag2 sqlite3 file; empty if unreadable."""
    try:
        con = _connect(db_path)
        try:
            return {name: typ for name, typ in con.execute("SELECT name, type FROM topics")}
        finally:
            con.close()
    except apsw.Error:
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
        apsw.Error: The topics table itself cannot be read (nothing is recoverable).
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
        except apsw.Error:
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
                rows = list(con.execute(sql, (start, stop)))
            except apsw.Error:
                rows = []
                for row_id in range(start, stop + 1):
                    try:
                        rows += list(con.execute(sql, (row_id, row_id)))
                    except apsw.Error:
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
_OP_HEADER, _OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 1, 2, 3, 4, 5, 6
_OP_CHUNK_INDEX, _OP_DATA_END = 8, 15


class _Corrupt(Exception):
    """A record header that cannot be valid."""


def _records(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, memoryview, bool]]:
    """Yield (opcode, body, complete) for the records in ``buf[pos:end]``; the last may be cut."""
    while pos + 9 <= end:
        op = buf[pos]
        length = int.from_bytes(buf[pos + 1 : pos + 9], "little")
        if not 1 <= op <= 0x0F and op < 0x80:
            raise _Corrupt(f"invalid record opcode 0x{op:02x} at offset {pos}")
        body_end = pos + 9 + length
        if body_end > end:
            yield op, buf[pos + 9 : end], False
            return
        yield op, buf[pos + 9 : body_end], True
        pos = body_end


def _string(body: memoryview, pos: int) -> tuple[str, int]:
    n = int.from_bytes(body[pos : pos + 4], "little")
    return bytes(body[pos + 4 : pos + 4 + n]).decode(), pos + 4 + n


def _decompress(compression: str, data: bytes, size: int) -> tuple[bytes, bool]:
    """Decompress a chunk; returns (data, complete). Partial streams give their prefix."""
    if compression == "":
        return data, len(data) >= size
    try:
        if compression == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
            except ImportError:
                from backports import zstd
            out = zstd.ZstdDecompressor().decompress(data)  # a streaming decompressor takes a cut frame
        elif compression == "lz4":
            import lz4.frame

            out = lz4.frame.LZ4FrameDecompressor().decompress(data)
        else:
            raise _Corrupt(f"unsupported chunk compression {compression!r}")
    except _Corrupt:
        raise
    except Exception as err:  # noqa: BLE001 - each codec has its own error types
        raise _Corrupt(f"{compression} decompression failed: {err}") from err
    return out, len(out) >= size


class _McapScan:
    """Schema/channel tables and message extraction shared by the indexed and forward scans."""

    def __init__(self, topics: set[str], problems: list[str], name: str) -> None:
        self.topics, self.problems, self.name = topics, problems, name
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, int]] = {}

    def record(self, op: int, body: memoryview) -> Iterator[RawMessage]:
        if op == _OP_SCHEMA:
            self.schemas[int.from_bytes(body[0:2], "little")] = _string(body, 2)[0]
        elif op == _OP_CHANNEL:
            cid = int.from_bytes(body[0:2], "little")
            self.channels[cid] = (_string(body, 4)[0], int.from_bytes(body[2:4], "little"))
        elif op == _OP_MESSAGE and len(body) >= 22:
            channel = self.channels.get(int.from_bytes(body[0:2], "little"))
            if channel is not None and channel[0] in self.topics:
                log_time = int.from_bytes(body[6:14], "little")
                yield channel[0], self.schemas.get(channel[1], ""), log_time, bytes(body[22:])
        elif op == _OP_CHUNK:
            yield from self.chunk(body)

    def chunk(self, body: memoryview) -> Iterator[RawMessage]:
        if len(body) < 40:
            raise _Corrupt(f"chunk header cut short ({len(body)} bytes)")
        size = int.from_bytes(body[16:24], "little")
        crc = int.from_bytes(body[24:28], "little")
        compression, pos = _string(body, 28)
        records = bytes(body[pos + 8 : pos + 8 + int.from_bytes(body[pos : pos + 8], "little")])
        data, complete = _decompress(compression, records, size)
        inner = memoryview(data)
        try:
            for op, rec, whole in _records(inner, 0, len(inner)):
                if whole:
                    yield from self.record(op, rec)
                else:
                    complete = False
        except _Corrupt as err:
            complete = False
            self.problems.append(f"{self.name}: corrupt record inside a chunk ({err}); rest of chunk skipped")
        if not complete:
            self.problems.append(
                f"{self.name}: a chunk is cut short or corrupt; its complete messages were kept"
            )
        elif crc and zlib.crc32(data) != crc:
            self.problems.append(f"{self.name}: chunk CRC mismatch; its messages may hold corrupt bytes")


def _summary_chunk_offsets(buf: memoryview, scan: _McapScan) -> list[int] | None:
    """Chunk offsets from the summary section, or None without a usable footer."""
    n = len(buf)
    footer = n - 8 - 29
    if n < 8 + 29 + 8 or bytes(buf[n - 8 :]) != _MAGIC or buf[footer] != _OP_FOOTER:
        return None
    summary_start = int.from_bytes(buf[footer + 9 : footer + 17], "little")
    if not 8 <= summary_start <= footer:
        return None
    offsets = []
    for op, body, whole in _records(buf, summary_start, footer):
        if whole and op == _OP_CHUNK_INDEX:
            offsets.append(int.from_bytes(body[16:24], "little"))
        elif whole and op in (_OP_SCHEMA, _OP_CHANNEL):
            list(scan.record(op, body))
    return sorted(offsets) or None


def mcap_messages(path: Path, topics: set[str], problems: list[str]) -> Iterator[RawMessage]:
    """Salvage messages of ``topics`` from a (possibly damaged) MCAP file."""
    with path.open("rb") as fh:
        if path.stat().st_size < len(_MAGIC):
            problems.append(f"{path.name}: file is empty or shorter than the MCAP magic")
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                yield from _mcap_scan(buf, path.name, topics, problems)
            finally:
                buf.release()


def _mcap_scan(buf: memoryview, name: str, topics: set[str], problems: list[str]) -> Iterator[RawMessage]:
    if bytes(buf[:8]) != _MAGIC:
        problems.append(f"{name}: not an MCAP file (bad magic)")
        return
    scan = _McapScan(topics, problems, name)
    try:
        offsets = _summary_chunk_offsets(buf, scan)
    except (_Corrupt, UnicodeDecodeError, IndexError):
        offsets = None
    if offsets is not None:  # indexed: every chunk stands alone
        for offset in offsets:
            try:
                for op, body, _ in _records(buf, offset, len(buf)):
                    if op != _OP_CHUNK:
                        raise _Corrupt(f"chunk index points at opcode 0x{op:02x}")
                    yield from scan.chunk(body)
                    break
            except (_Corrupt, UnicodeDecodeError, IndexError, ValueError) as err:
                problems.append(f"{name}: chunk at offset {offset} unreadable ({err}); skipped")
        return
    problems.append(f"{name}: no intact footer/summary; scanning forward (file truncated?)")
    try:
        for op, body, whole in _records(buf, 8, len(buf)):
            if op in (_OP_DATA_END, _OP_FOOTER):
                return
            if whole or op == _OP_CHUNK:  # a cut chunk still holds complete messages
                yield from scan.record(op, body)
            if not whole:
                problems.append(f"{name}: file ends inside a record (truncated)")
    except (_Corrupt, UnicodeDecodeError, IndexError, ValueError) as err:
        problems.append(f"{name}: stopped at corrupt data ({err}); later messages are lost")
