"""The event contract as the tests check it: docs/asyncapi.yaml and the JSON Schemas it references (issue 15).

:func:`check_message` validates one MQTT message (topic + payload) and :func:`check_event` one event object
(JSONL log, in-process sinks) against the schema the document names for it. Both are strict beyond the
schemas: a field the schema does not declare fails too, so nothing undocumented reaches the wire.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed (mypy follows this via tests/support)
import yaml  # type: ignore[import-untyped]

DOCS = Path(__file__).resolve().parents[1] / "docs"
ASYNCAPI = DOCS / "asyncapi.yaml"


@functools.cache
def asyncapi() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return doc


def resolve(ref: str) -> dict[str, Any]:
    """A ``$ref`` of the document: ``#/components/...`` or a schema file relative to docs/."""
    if ref.startswith("#/"):
        node: Any = asyncapi()
        for part in ref[2:].split("/"):
            node = node[part]
        found: dict[str, Any] = node
        return found
    return _schema_file(ref)


@functools.cache
def _schema_file(ref: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((DOCS / ref).read_text(encoding="utf-8"))
    return schema


def payload_schema(message: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in message:
        message = resolve(message["$ref"])
    payload = message["payload"]
    return resolve(payload["$ref"]) if "$ref" in payload else payload


@functools.cache
def _channels(root: str) -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    out = []
    for name, ch in asyncapi()["channels"].items():
        address = ch["address"].replace("pcgnet/", root + "/", 1)
        pattern = re.escape(address)
        for param in ch.get("parameters", {}):
            pattern = pattern.replace(re.escape("{" + param + "}"), "[^/]+")
        (message,) = ch["messages"].values()
        out.append((re.compile(pattern + "$"), name, payload_schema(message)))
    return out


def channel_of(topic: str, root: str = "pcgnet") -> tuple[str, dict[str, Any]]:
    """(channel name, payload schema) of a topic; AssertionError for a topic the document does not list."""
    for pattern, name, schema in _channels(root):
        if pattern.match(topic):
            return name, schema
    raise AssertionError(f"topic {topic!r} is not a channel of docs/asyncapi.yaml")


def validate(obj: Any, schema: dict[str, Any], where: str) -> None:
    """Schema validation plus: no top-level field the schema does not declare."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=str)
    assert not errors, f"{where}: {errors[0].message} (at {list(errors[0].absolute_path)}) in {obj}"
    undeclared = set(obj) - set(schema.get("properties", {})) if isinstance(obj, dict) else set()
    assert not undeclared, f"{where}: fields not in the schema {schema.get('$id')}: {sorted(undeclared)}"


def check_message(topic: str, payload: bytes | bytearray | dict[str, Any], root: str = "pcgnet") -> dict[str, Any] | None:
    """Validates one message the analyzer published; returns the payload object (None for a clearing
    empty retained message, which the document allows on the speaker channel only)."""
    name, schema = channel_of(topic, root)
    obj: dict[str, Any]
    if isinstance(payload, bytes | bytearray):
        if not payload:
            assert name == "speaker", f"empty payload on {topic!r} (only speaker state is cleared)"
            return None
        obj = json.loads(bytes(payload).decode("utf-8"), parse_constant=_no_constants)
    else:
        obj = payload
    validate(obj, schema, topic)
    return obj


def check_event(obj: dict[str, Any]) -> dict[str, Any]:
    """Validates an event object from the JSONL log or an in-process sink, by its ``type``."""
    channel = {"emotion": "emotion", "shift": "shift", "speaker": "speaker", "error": "error",
               "session": "session"}[obj["type"]]
    (message,) = asyncapi()["channels"][channel]["messages"].values()
    validate(obj, payload_schema(message), f"{obj['type']} event")
    return obj


def check_events(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objs:
        check_event(obj)
    return objs


def _no_constants(name: str) -> float:
    raise AssertionError(f"{name} in a payload: not JSON")
