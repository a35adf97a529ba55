"""MQTT topic names of the event schema, built from untrusted session and speaker ids.

Session and speaker ids come from users, transcripts and the MQTT input topic, so a raw id such as
``"a/b"``, ``"#"`` or ``"$SYS"`` could otherwise escape its topic level, subscribe-match other sessions or
address broker-internal topics. :func:`topic_level` turns any id into exactly one safe level by
percent-encoding (UTF-8) every character outside a conservative set, which is reversible
(:func:`decode_level`) and therefore collision-free for ids up to :data:`MAX_LEVEL_BYTES`; longer ids
are cut and suffixed with a SHA-256 digest of the full id, so distinct long ids still get distinct levels.

Schema (``<root>`` is ``pcgnet`` by default)::

    <root>/<session>/emotion              one event per utterance
    <root>/<session>/shift                emotion-shift events
    <root>/<session>/speakers/<speaker>   retained current state per speaker
    <root>/<session>/in/utterance         input: utterances posted by an external ASR/agent
    <root>/<session>/error                rejected input and runtime faults (rate-limited)
    <root>/<session>/session/<run_id>     retained start/end record of one run
    <root>/$status/<client_id>            one process's online/offline (retained, last will)
"""

from __future__ import annotations

from stream.ids import MAX_ID_BYTES, encode_id

__all__ = [
    "DEFAULT_ROOT",
    "MAX_LEVEL_BYTES",
    "decode_level",
    "emotion_topic",
    "error_topic",
    "input_filter",
    "input_topic",
    "session_from_input_topic",
    "session_from_topic",
    "shift_topic",
    "speaker_topic",
    "speakers_filter",
    "check_root",
    "status_filter",
    "run_topic",
    "status_topic",
    "topic_level",
]

DEFAULT_ROOT = "pcgnet"
MAX_LEVEL_BYTES = MAX_ID_BYTES
"""Upper bound of one encoded level; longer ids are cut and get a digest suffix."""

# Characters kept as they are (besides printable non-ASCII, see _keep). '%' is the escape character and
# so must itself be escaped; '/', '+', '#' are MQTT level separator and wildcards; space is escaped so
# that levels stay copy-pasteable into mosquitto_sub.
# '~' is escaped too: a raw '~' appears only in front of the digest of a cut id (stream/ids.py).
_UNSAFE_ASCII = frozenset("%/+#~")


def _keep(ch: str) -> bool:
    if ch in _UNSAFE_ASCII or ch == " ":
        return False
    # isprintable() is False for control (Cc), format (Cf, e.g. bidi overrides), surrogate,
    # private-use and unassigned code points and for all separators except the ASCII space.
    return ch.isprintable()


def topic_level(raw_id: str) -> str:
    """Encodes an id as one safe MQTT topic level.

    The result is non-empty, contains no ``/``, ``+``, ``#``, NUL or control characters, never starts
    with ``$`` (``$...`` topics are reserved for the broker and never match ``#``), and is at most
    :data:`MAX_LEVEL_BYTES` UTF-8 bytes long.

    Raises:
        ValueError: ``raw_id`` is empty or not a string.
    """
    return encode_id(raw_id, _keep, "$", "topic id")


def decode_level(level: str) -> str:
    """Inverse of :func:`topic_level` for ids that were not cut (no digest suffix).

    Raises:
        ValueError: ``level`` is not a valid encoded level (bad escape, invalid UTF-8, a raw unsafe
            character, or empty).
    """
    if not level:
        raise ValueError("empty topic level")
    out = bytearray()
    i = 0
    while i < len(level):
        ch = level[i]
        if ch == "%":
            hexpair = level[i + 1 : i + 3]
            if len(hexpair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in hexpair):
                raise ValueError(f"bad escape {level[i : i + 3]!r} in topic level")
            out.append(int(hexpair, 16))
            i += 3
            continue
        if not _keep(ch):
            raise ValueError(f"character {ch!r} not allowed unescaped in a topic level")
        out += ch.encode("utf-8")
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("topic level does not decode to UTF-8") from None


def check_root(root: str) -> str:
    """A topic root (``--topic-root``): one or more plain levels; ValueError saying why not."""
    if not root or any(c in root for c in "+#\x00") or root.startswith("$") or root.endswith("/") \
            or root.startswith("/") or "//" in root:
        raise ValueError(f"bad topic root {root!r} (non-empty levels, no + # or NUL, no leading $ or /)")
    return root


_root = check_root


def session_topic(session_id: str, suffix: str, *, root: str = DEFAULT_ROOT) -> str:
    """``<root>/<session>/<suffix>``: the one builder of per-session topics (the session id encoded as one level)."""
    return f"{_root(root)}/{topic_level(session_id)}/{suffix}"


def run_topic(session_id: str, run_id: str, *, root: str = DEFAULT_ROOT) -> str:
    """``<root>/<session>/session/<run_id>``: the retained start / end record of one run of a session (one
    topic per run, so two processes serving one session never overwrite each other's record)."""
    return session_topic(session_id, f"session/{topic_level(run_id)}", root=root)


def emotion_topic(session_id: str, *, root: str = DEFAULT_ROOT) -> str:
    """``<root>/<session>/emotion``."""
    return session_topic(session_id, "emotion", root=root)


def shift_topic(session_id: str, *, root: str = DEFAULT_ROOT) -> str:
    """``<root>/<session>/shift``."""
    return session_topic(session_id, "shift", root=root)


def speaker_topic(session_id: str, speaker: str, *, root: str = DEFAULT_ROOT) -> str:
    """``<root>/<session>/speakers/<speaker>`` (published retained)."""
    return session_topic(session_id, f"speakers/{topic_level(speaker)}", root=root)


def speakers_filter(session_id: str, *, root: str = DEFAULT_ROOT) -> str:
    """Subscription filter for all speakers of one session."""
    return session_topic(session_id, "speakers/+", root=root)


def input_topic(session_id: str, *, root: str = DEFAULT_ROOT) -> str:
    """``<root>/<session>/in/utterance``: where an external ASR or agent posts utterances."""
    return session_topic(session_id, "in/utterance", root=root)


def input_filter(*, root: str = DEFAULT_ROOT) -> str:
    """Subscription filter for the input topic of every session."""
    return f"{_root(root)}/+/in/utterance"


def error_topic(session_id: str, *, root: str = DEFAULT_ROOT) -> str:
    """``<root>/<session>/error``: rejected input messages and runtime faults."""
    return session_topic(session_id, "error", root=root)


STATUS_LEVEL = "$status"
"""Status records live under ``<root>/$status/``: a session id's leading ``$`` is always escaped, so no session
topic can collide with them."""


def status_topic(client_id: str, *, root: str = DEFAULT_ROOT) -> str:
    """``<root>/$status/<client_id>``: one process's retained online/offline record; also its last will.

    One topic per process, so one process's exit or will never overwrites another's "online"."""
    return f"{_root(root)}/{STATUS_LEVEL}/{topic_level(client_id)}"


def status_filter(*, root: str = DEFAULT_ROOT) -> str:
    """``<root>/$status/+``: every process's status record."""
    return f"{_root(root)}/{STATUS_LEVEL}/+"


def session_from_topic(topic: str, suffix: str, *, root: str = DEFAULT_ROOT, what: str | None = None) -> str:
    """The decoded session id of a ``<root>/<session>/<suffix>`` topic.

    Raises:
        ValueError: the topic does not have that shape or its session level is not a valid encoding.
    """
    prefix = _root(root) + "/"
    tail = "/" + suffix
    if not topic.startswith(prefix) or not topic.endswith(tail):
        raise ValueError(f"not {what or 'a ' + suffix} topic: {topic[:200]!r}")
    level = topic[len(prefix) : len(topic) - len(tail)]
    if "/" in level or not level:
        raise ValueError(f"not {what or 'a ' + suffix} topic: {topic[:200]!r}")
    return decode_level(level)


def session_from_input_topic(topic: str, *, root: str = DEFAULT_ROOT) -> str:
    """The decoded session id of an ``<root>/<session>/in/utterance`` topic (see :func:`session_from_topic`)."""
    return session_from_topic(topic, "in/utterance", root=root, what="an input")

