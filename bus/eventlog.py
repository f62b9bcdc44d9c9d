"""The event log: every event of a run, as received, in one append-only file.

Format (``docs/event-log.md``): the magic ``RTCHATLOG\\x00`` and a format byte, then records,
each ``[u32 length][u32 crc32 of body][body]`` (little-endian), where ``body`` is msgpack:

- ``[0, {meta}]`` — a header record (run id, versions, config digest); one at the start and one
  after every reopen (a restarted logger);
- ``[1, recv_ns, topic, header, [payload frames]]`` — one event, its wire frames verbatim.

The CRC makes damage visible: a reader stops at the first record that is cut off or whose CRC
or structure is wrong and says at which byte. A writer reopening a damaged file truncates it to
its last whole record before appending, so a crash loses at most the last unflushed records;
one whose disk fills up cuts the file back to its last whole record, so it stays readable.
Nothing in a log is unpickled or imported; events are decoded by the strict wire decoder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgpack

from rtchat.bus.events import Message

MAGIC = b"RTCHATLOG\x00\x01"
PREFIX = struct.Struct("<II")
MAX_RECORD_BYTES = 64 * 1024 * 1024
KIND_META, KIND_EVENT = 0, 1


class LogError(ValueError):
    """The file is not an rtchat event log at all."""


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    offset: int  # byte offset of the record in the file
    recv_ns: int
    frames: list[bytes]  # [topic, header, *payload], as on the wire


@dataclasses.dataclass(frozen=True, slots=True)
class Damage:
    offset: int  # the first byte that could not be read as a whole, valid record
    reason: str


class LogReader:
    """Iterates the records of a log; after iteration, ``damage`` says where reading stopped
    early (None when the file ended cleanly) and ``metas`` holds the header records."""

    def __init__(self, path: str | os.PathLike):
        self.path = resolve_log_path(path)
        self.damage: Damage | None = None
        self.metas: list[dict] = []
        self.end_offset = 0  # the end of the last whole record

    def __iter__(self) -> Iterator[Record]:
        self.damage, self.metas = None, []
        with open(self.path, "rb") as f:
            magic = f.read(len(MAGIC))
            if magic != MAGIC:
                raise LogError(f"{self.path}: not an rtchat event log (bad magic {magic[:12]!r})")
            self.end_offset = len(MAGIC)
            for kind, offset, body in _bodies(f, self):
                if kind == KIND_META:
                    self.metas.append(body)
                else:
                    yield Record(offset, body[0], body[1])

    def read_all(self) -> list[Record]:
        return list(self)


def _check(length: int, crc: int, body: bytes) -> tuple[int, object] | str:
    """A record's body parsed, or why it is not a whole, valid record."""
    if len(body) < length:
        return f"record cut off: {len(body)} of {length} bytes"
    if zlib.crc32(body) != crc:
        return "CRC mismatch (corrupt record)"
    return _parse(body) or "record body is not a valid log record"


def _bodies(f: BinaryIO, reader: LogReader) -> Iterator[tuple[int, int, object]]:
    offset = reader.end_offset
    while True:
        prefix = f.read(PREFIX.size)
        if not prefix:
            return
        if len(prefix) < PREFIX.size:
            reader.damage = Damage(offset, "record prefix cut off (the writer stopped mid-record)")
            return
        length, crc = PREFIX.unpack(prefix)
        if length > MAX_RECORD_BYTES:
            reader.damage = Damage(offset, f"record length {length} exceeds {MAX_RECORD_BYTES} (corrupt)")
            return
        checked = _check(length, crc, f.read(length))
        if isinstance(checked, str):
            reader.damage = Damage(offset, checked)
            return
        yield checked[0], offset, checked[1]
        offset += PREFIX.size + length
        reader.end_offset = offset


def _parse(body: bytes) -> tuple[int, object] | None:
    try:
        rec = msgpack.unpackb(body, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception:  # msgpack raises several types on bad input
        return None
    if not isinstance(rec, list) or not rec:
        return None
    if rec[0] == KIND_META and len(rec) == 2 and isinstance(rec[1], dict):
        return KIND_META, rec[1]
    if rec[0] == KIND_EVENT and len(rec) == 5:
        _, recv_ns, topic, header, payload = rec
        if (
            type(recv_ns) is int
            and isinstance(topic, bytes)
            and isinstance(header, bytes)
            and isinstance(payload, list)
            and all(isinstance(p, bytes) for p in payload)
        ):
            return KIND_EVENT, (recv_ns, [topic, header, *payload])
    return None


class LogWriter:
    """Appends records to a buffer in memory; ``flush()`` writes them to the file. Reopening an
    existing log first truncates any damaged tail, then appends a new header record. A flush the
    disk cannot take (it is full…) leaves the file ending at the last whole record that reached
    it: the records not written whole are dropped and the ``OSError`` is raised."""

    FLUSH_BYTES = 1 << 20  # append writes by itself once this much is pending

    def __init__(self, path: str | os.PathLike, meta: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.truncated: Damage | None = None
        self.pending = bytearray()  # whole records not yet written
        self.ends: list[int] = []  # where each pending record ends in `pending`
        if self.path.exists() and self.path.stat().st_size > 0:
            reader = LogReader(self.path)
            for _ in reader:
                pass
            self.truncated = reader.damage
            self.f = open(self.path, "r+b", buffering=0)  # noqa: SIM115 - held open until close()
            self.f.truncate(reader.end_offset)
            self.f.seek(reader.end_offset)
            self.size = reader.end_offset  # the file's length: the end of its last whole record
        else:
            self.f = open(self.path, "wb", buffering=0)  # noqa: SIM115
            self.size = 0
            self.pending += MAGIC
        self.records = 0
        self._write(msgpack.packb([KIND_META, meta], use_bin_type=True))
        try:
            self.flush()
        except OSError:
            self.f.close()
            raise

    def _write(self, body: bytes) -> None:
        self.pending += PREFIX.pack(len(body), zlib.crc32(body))
        self.pending += body
        self.ends.append(len(self.pending))

    def append(self, recv_ns: int, frames: list[bytes]) -> None:
        topic, header, *payload = (bytes(f) for f in frames)
        self._write(msgpack.packb([KIND_EVENT, recv_ns, topic, header, payload], use_bin_type=True))
        self.records += 1
        if len(self.pending) >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the pending records to the file (the OS's page cache)."""
        data, ends = memoryview(bytes(self.pending)), self.ends
        self.pending, self.ends = bytearray(), []
        written = 0
        try:
            while written < len(data):  # a write is partial when the disk fills up mid-way
                written += self.f.write(data[written:])
        except OSError:
            self.size += max((end for end in ends if end <= written), default=0)
            with contextlib.suppress(OSError):  # cutting a file back needs no space
                self.f.truncate(self.size)
                self.f.seek(self.size)
            raise
        self.size += len(data)

    def close(self) -> None:
        """Flush, fsync and close; the file is closed even when the flush raises."""
        if self.f.closed:
            return
        try:
            self.flush()
            os.fsync(self.f.fileno())
        finally:
            self.f.close()


class SeqTracker:
    """Per-publisher sequence numbers: a jump forward is lost events; a drop to a lower number
    is a publisher that restarted."""

    MAX_DETAILS = 100

    def __init__(self):
        self.last: dict[str, int] = {}
        self.lost = 0
        self.gaps = 0
        self.restarts = 0
        self.details: list[tuple[str, int, int]] = []  # (src, first missing seq, how many), first 100

    def see(self, src: str, seq: int) -> None:
        last = self.last.get(src)
        if last is not None:
            if seq > last + 1:
                self.gaps += 1
                self.lost += seq - last - 1
                if len(self.details) < self.MAX_DETAILS:
                    self.details.append((src, last + 1, seq - last - 1))
            elif seq <= last:
                self.restarts += 1
        self.last[src] = seq


LOG_FILE_NAME = "events.rtlog"


def resolve_log_path(path: str | os.PathLike) -> Path:
    """A log file, or a run directory holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / LOG_FILE_NAME
    if not p.is_file():
        raise FileNotFoundError(f"no event log at {path} (expected a .rtlog file or a run directory)")
    return p


TAIL_WINDOW_BYTES = 1 << 20  # read_since's first look at the end of a log; it grows ×4 as needed
RESYNC_MAX_RECORD_BYTES = 1 << 20  # while looking for a record boundary, longer "records" are noise


def read_since(path: str | os.PathLike, since_ns: int) -> list[Record]:
    """The event records received at or after ``since_ns``, oldest first.

    For a node that restarts inside a running session and catches up on what it missed: it
    reads the end of the log only, in windows that grow until one reaches back before
    ``since_ns`` (or to the start), so its cost follows what it returns, not the log's length.
    A window starts mid-record; the first boundary is found by trying every offset until a
    whole record checks out (length, CRC, shape). A cut or damaged tail (the logger is
    writing, or crashed) ends the records, as in ``LogReader``."""
    path = resolve_log_path(path)
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            raise LogError(f"{path}: not an rtchat event log (bad magic {magic[:12]!r})")
        size = f.seek(0, os.SEEK_END)
        window = TAIL_WINDOW_BYTES
        while True:
            start = max(len(MAGIC), size - window)
            f.seek(start)
            found = list(_scan(f.read(size - start), start, resync=start > len(MAGIC)))
            if start == len(MAGIC) or (found and found[0].recv_ns < since_ns):
                return [r for r in found if r.recv_ns >= since_ns]
            window *= 4


def read_messages_since(path: str | os.PathLike, since_ns: int, topics: tuple[str, ...] = ("",)) -> list[tuple[int, Message]]:
    """``read_since``, decoded by the strict wire decoder: (receive time, message) of the events
    whose topic starts with one of ``topics``; a record that does not decode is left out."""
    from rtchat.bus.wire import WireError, WireLimits, decode

    prefixes = tuple(t.encode() for t in topics)
    out = []
    for rec in read_since(path, since_ns):
        if not bytes(rec.frames[0]).startswith(prefixes):
            continue
        try:
            out.append((rec.recv_ns, decode(rec.frames, WireLimits())))
        except WireError:
            continue
    return out


def _scan(buf: bytes, base: int, resync: bool) -> Iterator[Record]:
    """Records in ``buf`` (which starts at file offset ``base``); with ``resync`` the first
    record boundary is searched for byte by byte."""
    pos = 0
    while pos + PREFIX.size <= len(buf):
        length, crc = PREFIX.unpack_from(buf, pos)
        limit = RESYNC_MAX_RECORD_BYTES if resync else MAX_RECORD_BYTES
        end = pos + PREFIX.size + length
        checked = _check(length, crc, buf[pos + PREFIX.size : end]) if length <= limit and end <= len(buf) else "bad"
        if isinstance(checked, str):
            if not resync:
                return
            pos += 1
            continue
        resync = False
        kind, body = checked
        if kind == KIND_EVENT:
            yield Record(base + pos, body[0], body[1])
        pos = end
