"""Hypothesis fuzzing of every parser of untrusted bytes not covered elsewhere (the MQTT input parser,
topics have theirs in tests/reliability; the cluster progress record and state blob are here).

Each target: no crash (only its one documented error type), no hang (a per-test timeout), and accepted
input really is valid. Example counts are bounded so the whole module runs in well under a minute.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pcgnet.data import DataError, read_pickle
from stream.capture.transcript import parse_line
from stream.cluster.progress import Progress
from stream.cluster.statecodec import StateBlob, StateError, decode_state, encode_state
from stream.mqtt.spool import Spool
from stream.record import FORMAT, VERSION, SessionFormatError, read_session

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(120)  # a hang (e.g. regex backtracking) fails instead of stalling CI


def one_clear_line(err: BaseException) -> None:
    msg = str(err)
    assert msg and "\n" not in msg and len(msg) < 2000, msg


# JSON values that stress parsers: deep nesting, huge integers, non-finite floats, odd strings.
json_leaf = (st.none() | st.booleans() | st.integers() | st.sampled_from([10**400, -(10**400), 2**64])
             | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=8)
deep_json = (st.sampled_from([999, 1500, 2040]) | st.integers(1, 3000)).map(lambda n: "[" * n + "]" * n)


def dump(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True)


# -- "Speaker: text" lines (stdin, transcript files) -----------------------------------------------------

line_pieces = st.sampled_from(["Alice", ":", " ", "\t", "#", "x", "é", "\x00", "\u2028", "\r", " " * 3000,
                               "a" * 70, ":" * 50])


@FUZZ
@given(st.text(max_size=200) | st.lists(line_pieces, max_size=30).map("".join))
def test_speaker_lines(line: str) -> None:
    try:
        parsed = parse_line(line)
    except ValueError as e:
        assert type(e) is ValueError
        one_clear_line(e)
        return
    if parsed is None:
        assert not line.strip() or line.strip().startswith("#")
        return
    speaker, text = parsed
    assert speaker and ":" not in speaker and len(speaker) <= 64 and speaker == speaker.strip()
    assert text and text == text.strip()


def test_speaker_line_with_a_long_blank_run_is_linear() -> None:
    """Found by the fuzzer: a lazy ``.*?`` before ``\\s*$`` made internal blank runs quadratic (a 16 k blank
    line took 2 s, a 1 MB one hours). The pytest timeout is the assertion."""
    assert parse_line("A: b" + " " * 1_000_000 + "c") == ("A", "b" + " " * 1_000_000 + "c")


# -- the record reader (--replay folders) -----------------------------------------------------------

def utterance_lines() -> st.SearchStrategy[str]:
    good = st.fixed_dictionaries({"utterance_id": st.text(max_size=5), "speaker": st.text(max_size=5),
                                  "t_start": json_leaf, "t_end": json_leaf},
                                 optional={"text": json_values, "emotion": json_values})
    return st.one_of(good.map(dump), st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(dump),
                     json_values.map(dump), deep_json, st.text(max_size=40))


meta_objects = st.fixed_dictionaries(
    {"format": st.sampled_from([FORMAT, "other"]), "version": st.sampled_from([VERSION, 2, "1"])},
    optional={"audio": json_values | st.fixed_dictionaries({"file": st.sampled_from(["audio.wav", "x\x00.wav", "..", "/"])}),
              "video": json_values | st.fixed_dictionaries({"file": st.sampled_from(["utterances.jsonl", "nope.mp4"]),
                                                            "fps": json_leaf})})


@FUZZ
@given(meta=meta_objects.map(dump) | deep_json | st.text(max_size=30), lines=st.lists(utterance_lines(), max_size=5),
       wav=st.binary(max_size=64), events=st.none() | st.binary(max_size=64))
def test_record_reader(meta: str, lines: list[str], wav: bytes, events: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "meta.json").write_text(meta)
        (root / "utterances.jsonl").write_text("\n".join(lines))
        (root / "audio.wav").write_bytes(wav)
        if events is not None:
            (root / "events.jsonl").write_bytes(events)
        try:
            rec = read_session(root)
        except SessionFormatError as e:
            one_clear_line(e)
            return
    for u in rec.utterances:
        assert u.utterance_id and u.speaker and 0 <= u.t_start <= u.t_end < float("inf")


# -- spool segments (the outbound MQTT spool, read back after a crash) ------------------------------------

HEAD, BODY = struct.Struct(">II"), struct.Struct(">QBH")


def record(seq: int, flags: int, topic: bytes, payload: bytes, topic_len: int | None = None) -> bytes:
    """A record whose CRC is right, whatever its body says: the reader's checks beyond the CRC."""
    body = BODY.pack(seq, flags, len(topic) if topic_len is None else topic_len) + topic + payload
    return HEAD.pack(len(body), zlib.crc32(body)) + body


crc_valid_records = st.builds(record, st.integers(0, 2**64 - 1), st.integers(0, 255),
                              st.binary(max_size=12) | st.just(b"pcgnet/x/emotion"), st.binary(max_size=20),
                              st.none() | st.integers(0, 65535))
segment_bytes = st.lists(crc_valid_records | st.binary(max_size=30), max_size=6).map(b"".join)


# Found by this target (fixed in stream/mqtt/spool.py): a CRC-valid record with a non-UTF-8 topic or QoS bits 3
# was a poison pill for every later peek(), and a negative or huge ACKED made append() raise struct.error.
@FUZZ
@example(segments=[record(1, 1, b"\x80", b"")], acked="")
@example(segments=[b""], acked="-2")
@given(segments=st.lists(segment_bytes, min_size=1, max_size=3), acked=st.text(max_size=25) | st.integers().map(str))
def test_spool_segments(segments: list[bytes], acked: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        for i, data in enumerate(segments):
            (directory / f"{1 + 10 * i:020d}.seg").write_bytes(data)
        (directory / "ACKED").write_text(acked)
        with Spool(directory, max_bytes=1 << 20) as spool:  # opening never fails on corrupt content
            messages = spool.peek(limit=100)
            assert len(messages) == len(spool)
            for m in messages:
                assert isinstance(m.topic, str) and m.qos in (0, 1, 2)
                spool.ack(m.seq)
            spool.append("pcgnet/x/emotion", b"{}")  # and it still takes new messages
            assert spool.peek()[-1].payload == b"{}"


# -- cluster progress records (JetStream KV) and state blobs -------------------------------------------------

VALID_PROGRESS = Progress(last_seq=9, steps=4, recent=["u1"], blob="b.x.3.ab", blob_steps=3, blob_seq=7,
                          events=[{"kind": "emotion", "payload": {}, "speaker": None}], worker="w#1")


@st.composite
def progress_payloads(draw: st.DrawFn) -> bytes:
    """A valid progress record with one field replaced, added or removed."""
    obj = json.loads(VALID_PROGRESS.encode())
    key = draw(st.sampled_from([*obj, "extra"]))
    if draw(st.booleans()):
        obj[key] = draw(json_values)
    else:
        obj.pop(key, None)
    return dump(obj).encode()


@FUZZ
@example(payload=b"[" * 2000 + b"]" * 2000)
@given(payload=st.binary(max_size=300) | progress_payloads() | deep_json.map(str.encode))
def test_cluster_progress_records(payload: bytes) -> None:
    try:
        rec = Progress.decode(payload)
    except ValueError as e:
        assert type(e) is ValueError
        one_clear_line(e)
        return
    assert Progress.decode(rec.encode()) == rec  # an accepted record round-trips


def state_blob() -> bytes:
    return encode_state(StateBlob("s", 2, "w", 5, ["a"], {"n": 1}, {"x": np.arange(6, dtype=np.float32)}))


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.tuples(st.integers(0, len(state_blob()) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda t: (b := state_blob())[:t[0]] + t[1] + b[t[0] + len(t[1]):]),  # overwrite a few bytes
    st.integers(0, len(state_blob())).map(lambda n: state_blob()[:n]),  # truncated
    st.tuples(st.integers(0, 2**64 - 1), st.text(max_size=80)).map(
        lambda t: struct.pack("<Q", t[0]) + t[1].encode()),
))
def test_cluster_state_blobs(data: bytes) -> None:
    try:
        blob = decode_state(data, expect_session="s")
    except StateError as e:
        assert type(e) is StateError
        one_clear_line(e)
        return
    assert blob.session == "s" and blob.epoch >= 0 and blob.next_seq >= 0


# -- the restricted unpickler (the paper's data pickles) -----------------------------------------------------

ALLOWED = [b"builtins\nset", b"builtins\nbytearray", b"builtins\ndict", b"builtins\ncomplex", b"builtins\nslice",
           b"collections\nOrderedDict", b"collections\ndefaultdict", b"_codecs\nencode", b"numpy\nndarray",
           b"numpy\ndtype", b"numpy.core.multiarray\n_reconstruct", b"numpy._core.numeric\n_frombuffer",
           b"os\nsystem", b"builtins\neval", b"builtins\ngetattr"]
opcodes = st.one_of(
    st.sampled_from(ALLOWED).map(lambda g: b"c" + g + b"\n"),
    st.sampled_from([b"(", b"t", b"l", b"d", b"R", b"b", b"a", b"e", b"s", b"u", b"0", b"N", b"\x88", b"\x89",
                     b")", b"]", b"}", b"\x85", b"\x86", b"\x87", b"\x8f", b"\x90", b"\x91", b"\x94", b"h\x00"]),
    st.integers(-(2**40), 2**40).map(lambda i: b"I" + str(i).encode() + b"\n"),
    st.sampled_from([10**12, 2**31, -1, 3]).map(lambda i: b"I" + str(i).encode() + b"\n"),
    st.text(max_size=8).map(lambda s: b"V" + s.encode("raw_unicode_escape").replace(b"\n", b"") + b"\n"),
    st.sampled_from(["latin1", "utf-8", "rot13", "nope", "hex", "zlib"]).map(lambda s: b"V" + s.encode() + b"\n"),
    st.binary(max_size=6).map(lambda b: b"C" + bytes([len(b)]) + b),
)
calls = st.builds(lambda g, args: b"c" + g + b"\n(" + b"".join(args) + b"tR.", st.sampled_from(ALLOWED),
                  st.lists(opcodes, max_size=4))  # global(*args): the constructors' own argument checks
pickles = st.one_of(st.binary(max_size=100), st.lists(opcodes, max_size=12).map(lambda ops: b"".join(ops) + b"."),
                    calls, json_values.map(lambda v: pickle.dumps(v, protocol=2)))


@FUZZ
@example(b"c_codecs\nencode\n(Vx\nVnope\ntR.")  # LookupError escaped
@example(b"cbuiltins\nbytearray\n(I100000000000000000000000\ntR.")  # OverflowError escaped
@example(b"cnumpy\nndarray\n((I100000\nI100000\nI1000\nttR.")  # MemoryError escaped
@given(pickles)
def test_restricted_unpickler(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.pkl"
        path.write_bytes(data)
        try:
            read_pickle(path)
        except DataError as e:
            assert type(e) is DataError
            one_clear_line(e)


def test_unpickler_refuses_allocation_bombs_and_odd_codecs(tmp_path: Path) -> None:
    """``bytearray(n)`` would fill memory with n zero bytes; only text codecs may rebuild bytes."""
    for data, why in ((b"cbuiltins\nbytearray\n(I4000000000\ntR.", "refusing bytearray(int)"),
                      (b"c_codecs\nencode\n(Vx\nVrot13\ntR.", "refusing codec 'rot13'")):
        (tmp_path / "x.pkl").write_bytes(data)
        with pytest.raises(DataError, match=re.escape(why)):
            read_pickle(tmp_path / "x.pkl")
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps((bytearray(b"ab"), np.arange(3)), protocol=2))
    got = read_pickle(tmp_path / "ok.pkl")
    assert got[0] == bytearray(b"ab") and got[1].tolist() == [0, 1, 2]
