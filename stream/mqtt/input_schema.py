"""The JSON Schema of an MQTT input utterance, built from the validator's own limits (``stream/mqtt/inbound.py``).

docs/schemas/v1/utterance-input.json is :func:`input_schema` written out; tests keep the file equal to it and
check that the schema and :func:`stream.mqtt.inbound.parse_utterance` accept the same objects, so the
documented input and the enforced one cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from .inbound import MAX_ID_CHARS, MAX_PAYLOAD_BYTES, MAX_TEXT_CHARS, MAX_TIME_S

__all__ = ["NAME_PATTERN", "TEXT_PATTERN", "input_schema"]

# The character rules as JSON Schema patterns (ECMA-262 and Python regexes alike: lookaheads only, no "$", which
# Python also matches before a final newline): input_schema() is the one description of the
# input that the validator enforces and docs/schemas/v1/utterance-input.json is generated from.
_C0_C1 = "\\u0000-\\u001f\\u007f-\\u009f"
_BIDI_CLASS = "\\u202a-\\u202e\\u2066-\\u2069\\u200e\\u200f\\u061c"
_SURROGATES = "\\ud800-\\udfff"
NAME_PATTERN = f"^(?![\\s\\S]*[{_C0_C1}{_BIDI_CLASS}{_SURROGATES}])(?=[\\s\\S]*\\S)"
"""speaker and utterance_id: not blank; no control, bidi-control or lone-surrogate characters."""
TEXT_PATTERN = f"^(?![\\s\\S]*[\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f{_SURROGATES}])(?=[\\s\\S]*\\S)"
"""text: not blank; tab and newline allowed, other control characters and lone surrogates not."""


def input_schema() -> dict[str, Any]:
    """The JSON Schema of an input utterance, from the validator's own limits and character rules.

    docs/schemas/v1/utterance-input.json is this object (tests/reliability/test_inbound.py keeps them equal and
    checks that the schema and :func:`parse_utterance` accept the same objects). What a JSON Schema cannot say
    is in its description: the payload size limit, UTF-8, no duplicate keys, and t_end >= t_start.
    """
    def time_field() -> dict[str, Any]:
        return {"type": ["number", "null"], "minimum": 0, "maximum": MAX_TIME_S,
                "description": "seconds since the session started; default: estimated from the conversation"}

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://pcgnet.example/schemas/v1/utterance-input.json",
        "title": "input utterance",
        "description": (
            f"An utterance posted by an ASR or agent to pcgnet/<session>/in/utterance: a UTF-8 JSON object of at "
            f"most {MAX_PAYLOAD_BYTES} bytes, no duplicate keys, and t_end >= t_start when both are given (rules a "
            "JSON Schema cannot state). The session comes from the topic. Anything else is rejected with an error "
            "event. Generated from stream/mqtt/input_schema.py from the limits stream/mqtt/inbound.py enforces."),
        "type": "object",
        "properties": {
            "speaker": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": NAME_PATTERN},
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS, "pattern": TEXT_PATTERN,
                     "description": "tab and newline allowed; no other control characters"},
            "utterance_id": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_ID_CHARS,
                             "pattern": NAME_PATTERN,
                             "description": "unique per session; default: u0001, u0002, ... by message count of "
                                            "the session. A re-sent id is reported as an error naming it"},
            "t_start": time_field(),
            "t_end": time_field(),
        },
        "required": ["speaker", "text"],
        "additionalProperties": False,
    }
