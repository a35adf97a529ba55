from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from stream.mqtt.backoff import Backoff
from stream.mqtt.spool import Spool, SpoolError


def payloads(spool: Spool, n: int = 10_000) -> list[bytes]:
    return [m.payload for m in spool.peek(n)]


def test_append_peek_ack_in_order(tmp_path: Path) -> None:
    with Spool(tmp_path / "sp") as sp:
        seqs = [sp.append(f"t/{i}", f"p{i}".encode(), retain=i == 2) for i in range(5)]
        assert seqs == sorted(seqs) and len(sp) == 5
        first = sp.peek(2)
        assert [m.payload for m in first] == [b"p0", b"p1"] and first[0].topic == "t/0" and first[0].qos == 1
        assert sp.peek(5)[2].retain is True
        sp.ack(seqs[1])  # out of order: the head stays pending
        assert payloads(sp) == [b"p0", b"p2", b"p3", b"p4"] and len(sp) == 4
        sp.ack(seqs[0])
        sp.ack(seqs[0])  # duplicate PUBACK is harmless
        assert payloads(sp) == [b"p2", b"p3", b"p4"] and len(sp) == 3


def test_pending_survive_reopen_and_acks_persist(tmp_path: Path) -> None:
    sp = Spool(tmp_path, segment_bytes=200, max_bytes=100_000)
    seqs = [sp.append("t", bytes([65 + i % 26]) * 30) for i in range(20)]
    for s in seqs[:7]:
        sp.ack(s)
    sp.close()
    sp2 = Spool(tmp_path, segment_bytes=200, max_bytes=100_000)
    got = sp2.peek(100)
    assert [m.seq for m in got] == seqs[7:]
    new = sp2.append("t", b"later")
    assert new > seqs[-1]  # sequence numbers keep increasing across restarts
    for m in got:
        sp2.ack(m.seq)
    sp2.ack(new)
    assert len(sp2) == 0
    sp2.close()
    assert list(tmp_path.glob("*.seg")) == []  # delivered segments are deleted, the last one on close


def test_torn_last_record_is_truncated(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    for i in range(5):
        sp.append("t", f"m{i}".encode())
    sp.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as fh:  # the process died in the middle of writing the last record
        fh.truncate(size - 3)
    sp2 = Spool(tmp_path)
    assert payloads(sp2) == [b"m0", b"m1", b"m2", b"m3"]
    assert sp2.stats().truncated_bytes > 0
    sp2.append("t", b"m5")  # appending after the repaired tail works and is readable after reopen
    sp2.close()
    assert payloads(Spool(tmp_path)) == [b"m0", b"m1", b"m2", b"m3", b"m5"]


def test_corrupt_record_in_old_segment_is_skipped(tmp_path: Path) -> None:
    sp = Spool(tmp_path, segment_bytes=100, max_bytes=100_000)
    for i in range(12):
        sp.append("t", f"msg{i:02d}".encode() * 2)
    sp.close()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) >= 3
    data = bytearray(segs[0].read_bytes())
    data[-2] ^= 0xFF  # flip a byte of the last record of the oldest segment
    segs[0].write_bytes(bytes(data))
    sp2 = Spool(tmp_path, segment_bytes=100, max_bytes=100_000)
    assert sp2.stats().corrupt == 1
    got = payloads(sp2)
    assert len(got) == 11 and got == sorted(got)


def test_size_bound_drops_oldest_with_counter(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=8192, segment_bytes=1024)
    for i in range(400):
        sp.append("pcgnet/s/emotion", f"{i:05d}".encode() * 8)
        assert sp.stats().bytes_on_disk <= 8192
    total = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert total <= 8192
    st = sp.stats()
    assert st.dropped > 0 and st.dropped + st.pending == 400
    got = payloads(sp)
    assert got[-1].startswith(b"00399") and got == sorted(got)  # the newest survive, in order
    sp.close()


def test_one_process_per_directory(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path)
    sp.close()
    Spool(tmp_path).close()


def test_random_operations_against_a_model(tmp_path: Path) -> None:
    """Random appends, acks (also out of order) and reopenings against a dict model.

    Only the contiguous ack watermark is persisted, so after a reopen the messages acked out of order
    above it come back (delivered again: at least once, never lost).
    """
    rng = random.Random(7)
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=512)
    appended: dict[int, bytes] = {}
    model: dict[int, bytes] = {}
    for step in range(1500):
        r = rng.random()
        if r < 0.6:
            p = os.urandom(rng.randint(0, 60))
            seq = sp.append("t", p)
            appended[seq] = model[seq] = p
        elif r < 0.9 and model:
            seq = rng.choice(sorted(model)[:3])
            sp.ack(seq)
            del model[seq]
        elif r < 0.93:
            sp.close()
            sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=512)
            watermark = min(model) - 1 if model else max(appended, default=0)
            model = {s: p for s, p in appended.items() if s > watermark}
        if step % 100 == 0:
            assert [(m.seq, m.payload) for m in sp.peek(10_000)] == sorted(model.items())
    assert [(m.seq, m.payload) for m in sp.peek(10_000)] == sorted(model.items())
    sp.close()


def test_backoff_grows_with_jitter_and_cap() -> None:
    b = Backoff(initial_s=0.1, max_s=2.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    for n, d in enumerate(delays):
        ceiling = min(2.0, 0.1 * 2**n)
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 2.0 and len(set(delays)) == len(delays)
    b.reset()
    assert b.next_delay() <= 0.1
    with pytest.raises(ValueError):
        Backoff(initial_s=5, max_s=1)


def test_disk_full_is_counted_and_leaves_no_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half way (ENOSPC) is cut off again; later records stay readable after reopen."""
    import errno

    from stream.mqtt import spool as spool_mod
    from stream.mqtt.publisher import SpoolPublisher

    sp = Spool(tmp_path)
    pub = SpoolPublisher(sp)
    assert pub.submit("t", b"first") > 0
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])  # the disk filled up in the middle of the record
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_mod.os, "write", half_then_fail)
    assert pub.submit("t", b"lost-one") == -1
    assert pub.write_failures == 1 and pub.status()["write_failures"] == 1
    monkeypatch.setattr(spool_mod.os, "write", real_write)
    assert pub.submit("t", b"after") > 0
    sp.close()
    reopened = Spool(tmp_path)
    assert payloads(reopened) == [b"first", b"after"]
    assert reopened.stats().truncated_bytes == 0 and reopened.stats().corrupt == 0
