"""Validation of utterances posted to ``pcgnet/<session>/in/utterance`` and rate limiting of error reports.

Anything on the input topic is untrusted: any client allowed by the broker's ACL can post there, so
the parser accepts exactly one documented shape and turns every other payload into an
:class:`InboundError` with a machine-readable ``code``, the offending ``field`` and a one-line message.
It never raises anything else (a property-based test throws thousands of generated payloads at it).

Accepted payload (UTF-8 JSON object, at most ``max_bytes``)::

    {"speaker": "Alice", "text": "hello there",          # required, non-empty strings
     "utterance_id": "u0007",                            # optional string
     "t_start": 12.3, "t_end": 14.0}                     # optional, finite, 0 <= t_start <= t_end

The session comes from the topic, not from the payload. Unknown fields, duplicate keys, ``NaN`` /
``Infinity``, booleans used as numbers, control characters (tab and newline are allowed in ``text``),
lone surrogates and bidi override characters in ids are rejected.

A flood of bad messages must not flood the log or the error topic either: :class:`ErrorRateLimiter`
admits a few reports per key (session) per second and counts what it suppressed, so the next admitted
report can say "N similar errors suppressed".
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .topics import DEFAULT_ROOT, session_from_input_topic

__all__ = [
    "ALLOWED_FIELDS",
    "Admission",
    "ErrorRateLimiter",
    "InboundError",
    "InboundUtterance",
    "TokenBucket",
    "parse_utterance",
]

ALLOWED_FIELDS = frozenset({"speaker", "text", "utterance_id", "t_start", "t_end"})
MAX_PAYLOAD_BYTES = 16_384
MAX_TEXT_CHARS = 4_000
MAX_ID_CHARS = 128
MAX_TIME_S = 1e7  # ~115 days: anything larger is a unit mistake (ms or epoch seconds)

# Bidi embedding/override/isolate controls: they make an id display differently from what it is.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


class InboundError(ValueError):
    """A rejected input message.

    Attributes:
        code: Stable machine-readable reason: ``too_large``, ``bad_encoding``, ``bad_json``, ``not_object``,
            ``missing_field``, ``unknown_field``, ``bad_type``, ``bad_value``, ``bad_topic``,
            ``unknown_session``.
        field: The offending field, or ``None`` when the whole message is at fault.
        message: One line for people, also the ``str()`` of the exception.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-able fields for an error event (no payload echo: it may be huge or hostile)."""
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class InboundUtterance:
    """One validated input utterance. Times are seconds from the session start, or ``None``."""

    session_id: str
    speaker: str
    text: str
    utterance_id: str | None = None
    t_start: float | None = None
    t_end: float | None = None


def _reject_constant(name: str) -> float:
    raise InboundError("bad_value", f"non-finite number {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InboundError("bad_json", f"duplicate key {_short(key)!r}", field=_short(key))
        out[key] = value
    return out


def _short(text: str, limit: int = 40) -> str:
    """A printable, bounded rendering of an untrusted string for messages."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _check_chars(field: str, value: str, *, allow_newlines: bool) -> None:
    for ch in value:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise InboundError("bad_value", f"{field} contains a lone surrogate U+{code:04X}", field)
        if code < 0x20 or 0x7F <= code < 0xA0:
            if allow_newlines and ch in "\t\n":
                continue
            raise InboundError("bad_value", f"{field} contains control character U+{code:04X}", field)
        if not allow_newlines and ch in _BIDI:
            raise InboundError("bad_value", f"{field} contains bidi control character U+{code:04X}", field)


def _string(obj: dict[str, Any], field: str, *, required: bool, max_chars: int, allow_newlines: bool = False) -> str | None:
    if field not in obj:
        if required:
            raise InboundError("missing_field", f"missing required field {field!r}", field)
        return None
    value = obj[field]
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InboundError("bad_type", f"{field} must be a string, got {_json_type(value)}", field)
    if not value.strip():
        raise InboundError("bad_value", f"{field} must not be empty", field)
    if len(value) > max_chars:
        raise InboundError("bad_value", f"{field} is {len(value)} characters, limit {max_chars}", field)
    _check_chars(field, value, allow_newlines=allow_newlines)
    return value


def _time(obj: dict[str, Any], field: str) -> float | None:
    value = obj.get(field)
    if value is None:
        return None
    # bool is an int subclass in Python; true/false are not times.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InboundError("bad_type", f"{field} must be a number of seconds, got {_json_type(value)}", field)
    try:
        seconds = float(value)
    except OverflowError:
        raise InboundError("bad_value", f"{field} is out of range", field) from None
    if not math.isfinite(seconds):
        raise InboundError("bad_value", f"{field} must be finite", field)
    if not 0.0 <= seconds <= MAX_TIME_S:
        raise InboundError("bad_value", f"{field}={seconds:g} is outside 0..{MAX_TIME_S:g} s", field)
    return seconds


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_utterance(
    topic: str,
    payload: bytes | bytearray | str,
    *,
    root: str = DEFAULT_ROOT,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_text_chars: int = MAX_TEXT_CHARS,
    accept_session: Callable[[str], bool] | None = None,
) -> InboundUtterance:
    """Parses and validates one input message.

    Args:
        topic: The topic it arrived on (``<root>/<session>/in/utterance``); gives the session id.
        payload: The raw payload.
        root: Topic root.
        max_bytes: Payload size cap, checked before any decoding.
        max_text_chars: Cap on ``text``.
        accept_session: Optional predicate; a session it refuses gives ``unknown_session``.

    Raises:
        InboundError: for every invalid message (and nothing else).
    """
    try:
        return _parse(topic, payload, root, max_bytes, max_text_chars, accept_session)
    except InboundError:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract is "InboundError or a valid utterance"
        raise InboundError("bad_json", f"unreadable message ({type(exc).__name__})") from None


def _json_value(payload: bytes | bytearray | str, max_bytes: int) -> object:
    """The payload's JSON value: bytes, size, UTF-8 and JSON checked (NaN, duplicate keys and deep nesting refused)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogatepass")
    if not isinstance(payload, bytes | bytearray):
        raise InboundError("bad_type", f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise InboundError("too_large", f"payload is {len(payload)} bytes, limit {max_bytes}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InboundError("bad_encoding", f"payload is not UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except InboundError:
        raise
    except json.JSONDecodeError as exc:
        raise InboundError("bad_json", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InboundError("bad_json", "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise InboundError("bad_json", f"invalid JSON: {_short(str(exc), 80)}") from None
    return obj


def _parse(
    topic: str,
    payload: bytes | bytearray | str,
    root: str,
    max_bytes: int,
    max_text_chars: int,
    accept_session: Callable[[str], bool] | None,
) -> InboundUtterance:
    try:
        session_id = session_from_input_topic(str(topic), root=root)
    except ValueError as exc:
        raise InboundError("bad_topic", str(exc)) from None
    if accept_session is not None and not accept_session(session_id):
        raise InboundError("unknown_session", f"unknown session {_short(session_id)!r}")

    obj = _json_value(payload, max_bytes)
    if not isinstance(obj, dict):
        raise InboundError("not_object", f"payload must be a JSON object, got {_json_type(obj)}")
    unknown = sorted(set(obj) - ALLOWED_FIELDS)
    if unknown:
        names = ", ".join(repr(_short(k)) for k in unknown[:5])
        raise InboundError(
            "unknown_field",
            f"unknown field(s) {names}; allowed: {', '.join(sorted(ALLOWED_FIELDS))}",
            field=_short(unknown[0]),
        )
    speaker = _string(obj, "speaker", required=True, max_chars=MAX_ID_CHARS)
    text_value = _string(obj, "text", required=True, max_chars=max_text_chars, allow_newlines=True)
    utterance_id = _string(obj, "utterance_id", required=False, max_chars=MAX_ID_CHARS)
    t_start = _time(obj, "t_start")
    t_end = _time(obj, "t_end")
    if t_start is not None and t_end is not None and t_end < t_start:
        raise InboundError("bad_value", f"t_end={t_end:g} is before t_start={t_start:g}", "t_end")
    assert speaker is not None and text_value is not None  # required=True guarantees it
    return InboundUtterance(
        session_id=session_id,
        speaker=speaker.strip(),
        text=text_value.strip(),
        utterance_id=utterance_id,
        t_start=t_start,
        t_end=t_end,
    )


# -- rate limiting -------------------------------------------------------------------------------------


class TokenBucket:
    """Classic token bucket: ``burst`` tokens, refilled at ``rate_per_s``; one token per admitted event.

    Args:
        rate_per_s: Refill rate (sustained admissions per second).
        burst: Bucket size (admissions allowed at once after a quiet period).
        clock: Monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def try_acquire(self) -> bool:
        """Takes one token if there is one; never blocks."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted report; ``suppressed`` = reports of the same key dropped since the previous one."""

    suppressed: int


class ErrorRateLimiter:
    """Per-key token buckets for error reports, under one global bucket, with a bounded number of keys.

    A flood on one session cannot silence the errors of another (per-key buckets), a flood spread over
    many session ids cannot flood the log either (the global bucket), and a flood of distinct keys cannot
    grow memory: beyond ``max_keys`` the least recently used key is forgotten. ``total_suppressed``
    counts every report dropped (for the status topic).

    Args:
        rate_per_s: Sustained reports per second per key.
        burst: Reports allowed at once per key.
        global_rate_per_s: Sustained reports per second over all keys.
        global_burst: Reports allowed at once over all keys.
        max_keys: Keys remembered at most.
        clock: Monotonic clock in seconds.
    """

    def __init__(
        self,
        rate_per_s: float = 1.0,
        burst: int = 5,
        *,
        global_rate_per_s: float = 10.0,
        global_burst: int = 20,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        TokenBucket(rate_per_s, burst)  # validates the numbers
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._global = TokenBucket(global_rate_per_s, global_burst, clock=clock)
        self._buckets: OrderedDict[str, tuple[TokenBucket, int]] = OrderedDict()
        self.total_suppressed = 0

    def admit(self, key: str) -> Admission | None:
        """``Admission`` when this report may go out, ``None`` when it is suppressed."""
        entry = self._buckets.pop(key, None)
        if entry is None:
            entry = (TokenBucket(self.rate_per_s, self.burst, clock=self._clock), 0)
        bucket, suppressed = entry
        # The per-key token is taken first: a key over its own limit must not drain the global bucket.
        if bucket.try_acquire() and self._global.try_acquire():
            self._remember(key, bucket, 0)
            return Admission(suppressed=suppressed)
        self.total_suppressed += 1
        self._remember(key, bucket, suppressed + 1)
        return None

    def now(self) -> float:
        """The limiter's clock (monotonic seconds; injectable, so periodic reports follow the same time)."""
        return self._clock()

    def drain_suppressed(self) -> dict[str, int]:
        """Keys with reports suppressed since their last admitted one, and how many; the counts restart.

        Reported periodically (a count event), so a burst followed by silence is never folded away."""
        out = {k: n for k, (_, n) in self._buckets.items() if n}
        for k in out:
            self._buckets[k] = (self._buckets[k][0], 0)
        return out

    def _remember(self, key: str, bucket: TokenBucket, suppressed: int) -> None:
        self._buckets[key] = (bucket, suppressed)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
