from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.mqtt import topics
from stream.mqtt.topics import MAX_LEVEL_BYTES, decode_level, topic_level


@pytest.mark.parametrize("raw", ["a/b", "#", "+", "$SYS", "a\x00b", "x\ny", "100%", "a b", "~", "\u202eevil", "Zoë"])
def test_hostile_ids_become_one_safe_level(raw: str) -> None:
    level = topic_level(raw)
    assert not set(level) & set("/+#\x00 ")
    assert not level.startswith("$")
    assert all(ch.isprintable() for ch in level)
    assert decode_level(level) == raw


def test_readable_ids_stay_readable() -> None:
    assert topic_level("Alice") == "Alice"
    assert topic_level("meeting-2024_01.A") == "meeting-2024_01.A"
    assert topic_level("Zoë") == "Zoë"


def test_empty_and_non_string_rejected() -> None:
    with pytest.raises(ValueError):
        topic_level("")
    with pytest.raises(ValueError):
        topic_level(5)  # type: ignore[arg-type]


def test_long_ids_are_bounded_and_distinct() -> None:
    a, b = "x" * 500 + "a", "x" * 500 + "b"
    la, lb = topic_level(a), topic_level(b)
    assert la != lb
    assert len(la.encode()) <= MAX_LEVEL_BYTES and len(lb.encode()) <= MAX_LEVEL_BYTES
    with pytest.raises(ValueError):
        decode_level(la)  # cut ids are not reversible, and say so
    # a short id cannot be crafted to equal the level of a cut one ('~' is always escaped)
    assert topic_level(la) != la


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_any_text_roundtrips_and_is_safe(raw: str) -> None:
    level = topic_level(raw)
    assert level and "/" not in level and "+" not in level and "#" not in level
    assert not level.startswith("$")
    assert len(level.encode("utf-8")) <= MAX_LEVEL_BYTES
    if "~" not in level:
        assert decode_level(level) == raw


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_distinct_ids_distinct_levels(a: str, b: str) -> None:
    if a != b:
        assert topic_level(a) != topic_level(b)


def test_schema_builders() -> None:
    assert topics.emotion_topic("s1") == "pcgnet/s1/emotion"
    assert topics.shift_topic("s1") == "pcgnet/s1/shift"
    assert topics.speaker_topic("s1", "Bob/#") == "pcgnet/s1/speakers/Bob%2F%23"
    assert topics.input_topic("a b") == "pcgnet/a%20b/in/utterance"
    assert topics.error_topic("s1") == "pcgnet/s1/error"
    assert topics.status_topic("live-1") == "pcgnet/$status/live-1" and topics.status_filter() == "pcgnet/$status/+"
    assert topics.status_topic("a/b", root="robots/lab") == "robots/lab/$status/a%2Fb"
    for root in ("", "$sys", "a/", "/a", "a//b", "a/+"):
        with pytest.raises(ValueError, match="bad topic root"):
            topics.check_root(root)
    assert topics.input_filter() == "pcgnet/+/in/utterance"
    assert topics.speakers_filter("s1") == "pcgnet/s1/speakers/+"
    assert topics.session_from_input_topic(topics.input_topic("a/b")) == "a/b"
    for bad in ("pcgnet/a/b/in/utterance", "pcgnet//in/utterance", "other/s/in/utterance", "pcgnet/%zz/in/utterance"):
        with pytest.raises(ValueError):
            topics.session_from_input_topic(bad)
    with pytest.raises(ValueError):
        topics.emotion_topic("s", root="pc/#")
