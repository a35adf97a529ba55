from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.mqtt.inbound import (
    ALLOWED_FIELDS,
    ErrorRateLimiter,
    InboundError,
    InboundUtterance,
    TokenBucket,
    parse_utterance,
)
from stream.mqtt.topics import input_topic

TOPIC = input_topic("s1")


def ok(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_valid_message() -> None:
    u = parse_utterance(TOPIC, ok(speaker="Alice", text="hi there", utterance_id="u1", t_start=1, t_end=2.5))
    assert u == InboundUtterance("s1", "Alice", "hi there", "u1", 1.0, 2.5)
    u2 = parse_utterance(input_topic("room/7"), ok(speaker="Bob", text="line one\nline two"))
    assert u2.session_id == "room/7" and u2.t_start is None and u2.utterance_id is None


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (b"{not json", "bad_json", None),
        (b"\xff\xfe{}", "bad_encoding", None),
        (b"[1,2]", "not_object", None),
        (b'"text"', "not_object", None),
        (ok(text="x"), "missing_field", "speaker"),
        (ok(speaker="A"), "missing_field", "text"),
        (ok(speaker=5, text="x"), "bad_type", "speaker"),
        (ok(speaker="A", text=["x"]), "bad_type", "text"),
        (ok(speaker="A", text="x", t_start="1"), "bad_type", "t_start"),
        (ok(speaker="A", text="x", t_start=True), "bad_type", "t_start"),
        (ok(speaker="A", text="x", t_start=-1), "bad_value", "t_start"),
        (ok(speaker="A", text="x", t_start=3, t_end=2), "bad_value", "t_end"),
        (b'{"speaker":"A","text":"x","t_start":NaN}', "bad_value", None),
        (b'{"speaker":"A","text":"x","t_end":Infinity}', "bad_value", None),
        (b'{"speaker":"A","text":"x","t_end":1e999}', "bad_value", "t_end"),
        (ok(speaker="A", text="x", session="other"), "unknown_field", "session"),
        (ok(speaker="A", text="x", evil={"a": 1}), "unknown_field", "evil"),
        (b'{"speaker":"A","speaker":"B","text":"x"}', "bad_json", "speaker"),
        (ok(speaker="A\x07", text="x"), "bad_value", "speaker"),
        (ok(speaker="A", text="x\x1b[2J"), "bad_value", "text"),
        (ok(speaker="\u202eA", text="x"), "bad_value", "speaker"),
        (b'{"speaker":"A\\ud800","text":"x"}', "bad_value", "speaker"),
        (ok(speaker="   ", text="x"), "bad_value", "speaker"),
        (ok(speaker="A", text="x" * 5000), "bad_value", "text"),
        (b'{"speaker":"A","text":"x","t_start":' + b"9" * 5000 + b"}", "bad_json", None),
        (b"[" * 8000 + b"]" * 8000, "bad_json", None),
        (b" " * 20000, "too_large", None),
    ],
)
def test_invalid_messages_are_typed_errors(payload: bytes, code: str, field: str | None) -> None:
    with pytest.raises(InboundError) as info:
        parse_utterance(TOPIC, payload)
    err = info.value
    assert err.code == code, err.message
    if field is not None:
        assert err.field == field
    assert "\n" not in err.message and len(err.message) < 300
    assert err.to_dict()["code"] == code


def test_bad_topic_and_unknown_session() -> None:
    with pytest.raises(InboundError) as info:
        parse_utterance("pcgnet/s1/emotion", ok(speaker="A", text="x"))
    assert info.value.code == "bad_topic"
    with pytest.raises(InboundError) as info:
        parse_utterance(TOPIC, ok(speaker="A", text="x"), accept_session=lambda s: s == "other")
    assert info.value.code == "unknown_session"


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
field_names = st.sampled_from(sorted(ALLOWED_FIELDS)) | st.text(max_size=10)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names, json_values, max_size=7))
def test_generated_objects_never_raise_unexpectedly(obj: dict[str, object]) -> None:
    payload = json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")
    try:
        u = parse_utterance(TOPIC, payload)
    except InboundError as err:
        assert err.code and err.message
        return
    # accepted ones really are valid
    assert set(obj) <= ALLOWED_FIELDS
    assert u.speaker and u.text
    for t in (u.t_start, u.t_end):
        assert t is None or (math.isfinite(t) and t >= 0)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_generated_bytes_never_raise_unexpectedly(payload: bytes) -> None:
    try:
        parse_utterance(TOPIC, payload)
    except InboundError:
        pass


valid_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Zl", "Zp")), min_size=1, max_size=50).filter(str.strip)


@settings(max_examples=800, deadline=None)
@given(
    speaker=valid_text,
    text=valid_text,
    uid=st.none() | valid_text,
    times=st.none() | st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)).map(sorted),
)
def test_generated_valid_messages_are_accepted(speaker: str, text: str, uid: str | None, times: list[float] | None) -> None:
    obj: dict[str, object] = {"speaker": speaker, "text": text}
    if uid is not None:
        obj["utterance_id"] = uid
    if times is not None:
        obj["t_start"], obj["t_end"] = times
    u = parse_utterance(TOPIC, json.dumps(obj).encode())
    assert u.speaker == speaker.strip() and u.text == text.strip() and u.utterance_id == uid
    if times is not None:
        assert (u.t_start, u.t_end) == tuple(times)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket() -> None:
    clock = FakeClock()
    b = TokenBucket(2.0, 3, clock=clock)
    assert [b.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    clock.t = 0.5  # one token back
    assert b.try_acquire() and not b.try_acquire()


def test_error_rate_limiter_counts_suppressed_per_key() -> None:
    clock = FakeClock()
    lim = ErrorRateLimiter(rate_per_s=1.0, burst=2, max_keys=3, clock=clock)
    results = [lim.admit("s1") for _ in range(10)]
    assert sum(r is not None for r in results) == 2
    assert lim.total_suppressed == 8
    assert lim.admit("s2") is not None  # another session is not silenced
    clock.t = 1.0
    again = lim.admit("s1")
    assert again is not None and again.suppressed == 8
    for i in range(100):  # many keys: memory stays bounded
        lim.admit(f"k{i}")
    assert len(lim._buckets) <= 3


def test_error_rate_limiter_global_bucket_caps_a_spray_over_many_sessions() -> None:
    clock = FakeClock()
    lim = ErrorRateLimiter(rate_per_s=1.0, burst=5, global_rate_per_s=10.0, global_burst=20, clock=clock)
    admitted = sum(lim.admit(f"session{i}") is not None for i in range(500))
    assert admitted == 20 and lim.total_suppressed == 480
    clock.t = 1.0  # the global bucket refills at 10/s
    assert sum(lim.admit(f"other{i}") is not None for i in range(100)) == 10


def test_suppressed_reports_are_counted_per_key_and_drained_for_the_periodic_count_event() -> None:
    clock = FakeClock()
    lim = ErrorRateLimiter(1.0, 2, clock=clock)
    admitted = [lim.admit("room") is not None for _ in range(6)]
    assert admitted == [True, True, False, False, False, False]
    assert lim.admit("other") is not None
    assert lim.drain_suppressed() == {"room": 4}  # what the periodic count event reports
    assert lim.drain_suppressed() == {}  # ... once
    clock.t = 5.0
    adm = lim.admit("room")
    assert adm is not None and adm.suppressed == 0  # not counted twice


def _schema_accepts(obj: dict[str, object]) -> bool:
    import jsonschema

    from stream.mqtt.input_schema import input_schema

    if not jsonschema.Draft202012Validator(input_schema()).is_valid(obj):
        return False
    t0, t1 = obj.get("t_start"), obj.get("t_end")
    return not (isinstance(t0, int | float) and isinstance(t1, int | float) and t1 < t0)  # stated in its description


def _validator_accepts(obj: dict[str, object]) -> bool:
    try:
        parse_utterance(TOPIC, json.dumps(obj).encode())  # ensure_ascii: lone surrogates travel as escapes
    except InboundError:
        return False
    return True


def test_the_documented_input_schema_is_the_validators() -> None:
    from pathlib import Path

    from stream.mqtt.input_schema import input_schema

    doc = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "v1" / "utterance-input.json"
    assert json.loads(doc.read_text(encoding="utf-8")) == input_schema()  # regenerate the file from the code
    cases: list[dict[str, object]] = [
        {"speaker": "A", "text": "bell \u0007"}, {"speaker": "A", "text": "two\nlines\tok"},
        {"speaker": "A\n", "text": "x"}, {"speaker": "   ", "text": "x"}, {"speaker": "A", "text": " \n "},
        {"speaker": "A\u202e", "text": "x"}, {"speaker": "A", "text": "bidi \u202e in text is fine"},
        {"speaker": "A", "text": "x" * 4000}, {"speaker": "A", "text": "x" * 4001}, {"speaker": "a" * 129, "text": "x"},
        {"speaker": "A", "text": "x", "utterance_id": None}, {"speaker": "A", "text": "x", "utterance_id": "\u0085"},
        {"speaker": "A", "text": "x", "t_start": 2, "t_end": 1}, {"speaker": "A", "text": "x", "t_end": 1e7 + 1},
        {"speaker": "A", "text": "x", "t_start": True}, {"speaker": "A", "text": "lone \ud800"},
    ]
    for obj in cases:
        assert _schema_accepts(obj) == _validator_accepts(obj), obj


_chars = st.sampled_from(["a", " ", "\t", "\n", "\u0007", "\u0085", "\u202e", "\ud800", "é", "\u3000"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries(
    {"speaker": st.text(_chars, max_size=5), "text": st.text(_chars, max_size=8)},
    optional={"utterance_id": st.one_of(st.none(), st.text(_chars, max_size=4)),
              "t_start": st.one_of(st.none(), st.floats(-1, 2e7), st.booleans()),
              "t_end": st.one_of(st.none(), st.floats(-1, 2e7)), "extra": st.just(1)}))
def test_schema_and_validator_accept_the_same_objects(obj: dict[str, object]) -> None:
    assert _schema_accepts(obj) == _validator_accepts(obj), obj
