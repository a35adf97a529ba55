"""A bounded on-disk spool of outbound MQTT messages, so events survive a broker outage or a crash.

Every outbound event is appended to the spool first (write-ahead) and removed only after the broker
acknowledged it (PUBACK of a QoS 1 publish). One publisher drains the spool strictly in sequence order,
so after a reconnect the backlog is delivered in the order it was produced. Delivery is at least once:
a message whose PUBACK was lost is sent again, and subscribers drop duplicates by the event id.

On-disk layout (one directory, owned by one process through an ``flock`` on ``LOCK``)::

    <dir>/LOCK
    <dir>/ACKED                       highest sequence number acknowledged (text; atomic replace)
    <dir>/00000000000000000001.seg    segment files named after the first sequence number they hold

A segment is a sequence of records ``>II`` (body length, CRC-32 of body) followed by the body
``>QBH`` (sequence number, flags, topic length), the UTF-8 topic, with flag bit 3 a ``>I`` MQTT 5 message
expiry in seconds, and the payload. Flags: bits 0-1 QoS, bit 2 retain, bit 3 expiry. Each record is written with a single ``write`` to an ``O_APPEND`` file descriptor.

Crash safety: on open every segment is scanned and each record's length and CRC are checked. A torn
or corrupt tail of the newest segment (the process died mid-``write``) is truncated away with a warning;
a corrupt record inside an older segment ends the reading of that segment (counted in ``corrupt``).

Durability (``fsync`` policy):

* ``"never"``: records reach the OS page cache on ``write``; they survive a crash or kill of the
  process, not a power loss or kernel crash.
* ``"rotate"`` (default): as ``"never"``, plus ``fsync`` when a segment is closed and on :meth:`close`.
* ``"always"``: ``fsync`` after every record; survives power loss (costs one disk flush per event).

The ``ACKED`` file is never fsynced: losing it can only cause messages to be delivered again (they are
deduplicated by event id), never lost.

Size bound (drop-oldest): the segment files together never exceed ``max_bytes``. When an append would
exceed it, the oldest segment is deleted whole, its unacknowledged records are counted in ``dropped``
and a warning is logged. Newest events are kept because subscribers act on the current state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "FsyncPolicy",
    "Spool",
    "SpoolError",
    "SpoolStats",
    "SpooledMessage",
]

logger = logging.getLogger(__name__)

FsyncPolicy = Literal["never", "rotate", "always"]

_HEAD = struct.Struct(">II")  # body length, crc32(body)
_BODY = struct.Struct(">QBH")  # seq, flags, topic length
_EXPIRY = struct.Struct(">I")  # message expiry interval (s), present when flags & _EXPIRY_FLAG
_EXPIRY_FLAG = 8
_SUFFIX = ".seg"
_MAX_TOPIC_BYTES = 65535


class SpoolError(RuntimeError):
    """The spool directory cannot be used (locked by another process, unwritable, ...)."""


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """One stored outbound message."""

    seq: int
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    expiry_s: int | None = None  # MQTT 5 message expiry interval


@dataclass(slots=True)
class SpoolStats:
    """Counters for the status topic and the UI."""

    pending: int  # stored, not yet acknowledged
    bytes_on_disk: int
    appended: int  # since open
    acked: int  # since open
    dropped: int  # unacknowledged records deleted by the size bound, since open
    corrupt: int  # unreadable records found on open (torn writes excluded)
    truncated_bytes: int  # torn tail removed on open


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int
    last_seq: int = 0
    records: int = 0


class Spool:
    """Append-only segmented on-disk queue with acknowledged removal.

    Args:
        directory: Spool directory (created if missing). One process at a time.
        max_bytes: Bound of all segment files together (drop-oldest beyond it).
        segment_bytes: Size at which a new segment is started; at most ``max_bytes // 2``.
        fsync: Durability policy, see the module docstring.

    Raises:
        SpoolError: the directory is locked by another live process or cannot be created.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int | None = None,
        fsync: FsyncPolicy = "rotate",
    ) -> None:
        if fsync not in ("never", "rotate", "always"):
            raise ValueError(f"fsync policy must be never, rotate or always, got {fsync!r}")
        if max_bytes < 4096:
            raise ValueError(f"spool max_bytes must be at least 4096, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes or max(2048, self.max_bytes // 16))
        self.segment_bytes = min(self.segment_bytes, self.max_bytes // 2)
        self.fsync = fsync
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SpoolError(f"spool directory {self.directory} is in use by another process") from None
        self._segments: deque[_Segment] = deque()
        self._index: deque[tuple[int, _Segment, int]] = deque()  # (seq, segment, offset) of pending records
        self._acked_above: set[int] = set()  # acked out of order, above the watermark
        self._write_fd: int | None = None
        self._read_cache: tuple[Path, int] | None = None
        self._appended = self._acked = self._dropped = self._corrupt = self._truncated = 0
        self._acked_seq = self._read_acked()
        self._next_seq = self._acked_seq + 1
        self._recover()

    # -- public API ---------------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
               expiry_s: int | None = None) -> int:
        """Stores one message and returns its sequence number (its position in delivery order)."""
        topic_b = topic.encode("utf-8")
        if len(topic_b) > _MAX_TOPIC_BYTES:
            raise ValueError(f"topic is {len(topic_b)} bytes, MQTT allows {_MAX_TOPIC_BYTES}")
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        seq = self._next_seq
        flags = qos | (4 if retain else 0) | (_EXPIRY_FLAG if expiry_s is not None else 0)
        expiry = _EXPIRY.pack(expiry_s) if expiry_s is not None else b""
        body = _BODY.pack(seq, flags, len(topic_b)) + topic_b + expiry + bytes(payload)
        record = _HEAD.pack(len(body), zlib.crc32(body)) + body
        if len(record) > self.segment_bytes:
            raise ValueError(f"message of {len(record)} bytes exceeds the spool segment size {self.segment_bytes}")
        seg = self._writable_segment(len(record))
        self._enforce_bound(len(record))
        assert self._write_fd is not None
        offset = seg.size
        try:
            written = os.write(self._write_fd, record)
            if written != len(record):
                raise OSError(errno.ENOSPC, "short write")
            if self.fsync == "always":
                os.fsync(self._write_fd)
        except OSError:
            # Cut a partial record off again: records appended later must not sit behind a torn one.
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_fd, offset)
            raise
        seg.size += len(record)
        seg.last_seq = seq
        seg.records += 1
        self._index.append((seq, seg, offset))
        self._next_seq = seq + 1
        self._appended += 1
        return seq

    def peek(self, limit: int = 1) -> list[SpooledMessage]:
        """The oldest ``limit`` unacknowledged messages, in order (without removing them)."""
        out: list[SpooledMessage] = []
        for seq, seg, offset in self._index:
            if len(out) >= limit:
                break
            if seq in self._acked_above:
                continue
            out.append(self._read_at(seg, offset))
        return out

    def ack(self, seq: int) -> None:
        """Marks ``seq`` delivered; segments whose records are all delivered are deleted."""
        if seq <= self._acked_seq or seq >= self._next_seq or seq in self._acked_above:
            return  # already acked (duplicate PUBACK after a resend) or unknown
        self._acked_above.add(seq)
        self._acked += 1
        advanced = False
        while self._index and self._index[0][0] in self._acked_above:
            head_seq = self._index.popleft()[0]
            self._acked_above.discard(head_seq)
            self._acked_seq = head_seq
            advanced = True
        if advanced:
            self._write_acked()
            self._delete_delivered_segments()

    def __len__(self) -> int:
        return len(self._index) - len(self._acked_above)

    @property
    def dropped(self) -> int:
        """Unacknowledged messages deleted by the size bound since open."""
        return self._dropped

    def stats(self) -> SpoolStats:
        return SpoolStats(
            pending=len(self),
            bytes_on_disk=sum(s.size for s in self._segments),
            appended=self._appended,
            acked=self._acked,
            dropped=self._dropped,
            corrupt=self._corrupt,
            truncated_bytes=self._truncated,
        )

    def close(self) -> None:
        """Flushes (per the fsync policy), deletes a fully delivered last segment, releases the lock."""
        self._close_writer()
        self._close_reader()
        if self._lock_fd >= 0:
            self._delete_delivered_segments()
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------

    def _read_acked(self) -> int:
        try:
            acked = int((self.directory / "ACKED").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
        return min(max(acked, 0), 2**63 - 1)  # a tampered file must not make append() overflow the u64

    def _write_acked(self) -> None:
        tmp = self.directory / "ACKED.tmp"
        tmp.write_text(str(self._acked_seq))
        os.replace(tmp, self.directory / "ACKED")

    def _recover(self) -> None:
        paths = sorted(self.directory.glob("*" + _SUFFIX))
        last_seen = 0
        for i, path in enumerate(paths):
            try:
                first = int(path.stem)
            except ValueError:
                logger.warning("spool: ignoring unexpected file %s", path)
                continue
            is_last = i == len(paths) - 1
            seg = _Segment(first_seq=first, path=path, size=0)
            data = path.read_bytes()
            pos = 0
            while pos < len(data):
                rec = _decode(data, pos)
                if rec is None or rec[0] <= last_seen:  # sequence numbers only increase
                    break
                seq, end = rec
                if seq > self._acked_seq:
                    self._index.append((seq, seg, pos))
                seg.last_seq = last_seen = seq
                seg.records += 1
                self._next_seq = max(self._next_seq, seq + 1)
                pos = end
            if pos < len(data):
                if is_last:
                    self._truncated += len(data) - pos
                    logger.warning(
                        "spool: %s ends with a torn record; dropped its last %d bytes", path, len(data) - pos
                    )
                    with open(path, "r+b") as fh:
                        fh.truncate(pos)
                else:
                    self._corrupt += 1
                    logger.warning("spool: %s has a corrupt record at byte %d; the rest of it is skipped", path, pos)
            seg.size = pos
            self._segments.append(seg)
        self._delete_delivered_segments()
        if self._index:
            logger.info("spool: %d undelivered message(s) recovered from %s", len(self._index), self.directory)

    def _writable_segment(self, record_len: int) -> _Segment:
        seg = self._segments[-1] if self._segments else None
        if seg is not None and seg.size + record_len <= self.segment_bytes:
            if self._write_fd is None:  # the newest segment recovered on open: append to it
                self._write_fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
            return seg
        self._close_writer()
        path = self.directory / f"{self._next_seq:020d}{_SUFFIX}"
        self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        new = _Segment(first_seq=self._next_seq, path=path, size=0)
        self._segments.append(new)
        return new

    def _close_writer(self) -> None:
        if self._write_fd is not None:
            if self.fsync in ("rotate", "always"):
                os.fsync(self._write_fd)
            os.close(self._write_fd)
            self._write_fd = None

    def _close_reader(self) -> None:
        if self._read_cache is not None:
            os.close(self._read_cache[1])
            self._read_cache = None

    def _enforce_bound(self, incoming: int) -> None:
        total = sum(s.size for s in self._segments) + incoming
        while total > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments.popleft()
            lost = 0
            while self._index and self._index[0][1] is oldest:
                seq = self._index.popleft()[0]
                if seq in self._acked_above:
                    self._acked_above.discard(seq)
                else:
                    lost += 1
            if oldest.last_seq > self._acked_seq:
                self._acked_seq = oldest.last_seq
                self._write_acked()
            self._drop_file(oldest)
            total -= oldest.size
            if lost:
                self._dropped += lost
                logger.warning(
                    "spool full (%d bytes): dropped %d oldest undelivered message(s) (seq %d..%d); %d dropped so far",
                    self.max_bytes, lost, oldest.first_seq, oldest.last_seq, self._dropped,
                )

    def _delete_delivered_segments(self) -> None:
        # Keep the segment being written to; delete older ones whose records are all acknowledged.
        while len(self._segments) > 1 and self._segments[0].last_seq <= self._acked_seq:
            self._drop_file(self._segments.popleft())
        if len(self._segments) == 1 and self._write_fd is None:
            only = self._segments[0]
            if only.records and only.last_seq <= self._acked_seq:
                self._drop_file(self._segments.popleft())

    def _drop_file(self, seg: _Segment) -> None:
        if self._read_cache is not None and self._read_cache[0] == seg.path:
            self._close_reader()
        seg.path.unlink(missing_ok=True)

    def _read_at(self, seg: _Segment, offset: int) -> SpooledMessage:
        if self._read_cache is None or self._read_cache[0] != seg.path:
            self._close_reader()
            self._read_cache = (seg.path, os.open(seg.path, os.O_RDONLY))
        fd = self._read_cache[1]
        head = os.pread(fd, _HEAD.size, offset)
        length, _crc = _HEAD.unpack(head)
        body = os.pread(fd, length, offset + _HEAD.size)
        seq, flags, topic_len = _BODY.unpack_from(body)
        start = _BODY.size
        topic = body[start : start + topic_len].decode("utf-8")
        start += topic_len
        expiry_s = None
        if flags & _EXPIRY_FLAG:
            (expiry_s,) = _EXPIRY.unpack_from(body, start)
            start += _EXPIRY.size
        return SpooledMessage(seq=seq, topic=topic, payload=body[start:], qos=flags & 3, retain=bool(flags & 4),
                              expiry_s=expiry_s)


def _decode(data: bytes, pos: int) -> tuple[int, int] | None:
    """(seq, end offset) of a valid record at ``pos``, or ``None`` for a torn/corrupt one."""
    if pos + _HEAD.size > len(data):
        return None
    length, crc = _HEAD.unpack_from(data, pos)
    start = pos + _HEAD.size
    end = start + length
    if length < _BODY.size or end > len(data):
        return None
    body = data[start:end]
    if zlib.crc32(body) != crc:
        return None
    seq, flags, topic_len = _BODY.unpack_from(body)
    if _BODY.size + topic_len + (_EXPIRY.size if flags & _EXPIRY_FLAG else 0) > length or flags & 3 == 3 or seq >= 2**63:
        return None  # QoS 3 and sequence numbers no writer reaches are corruption
    try:  # a CRC-valid record with a non-UTF-8 topic would fail every later read: treat it as corrupt
        body[_BODY.size : _BODY.size + topic_len].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return seq, end
