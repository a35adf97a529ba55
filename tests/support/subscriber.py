"""A robot's subscriber written from the documents alone (docs/asyncapi.yaml, docs/events.md): it picks its
topics from the "send" operations tagged ``events``, validates every payload with the schema its channel
names, drops duplicates by the documented key and reset rule, and checks what a robot relies on:

* coherence: every shift's ``to`` is the ``expression`` of the emotion event of the same run and utterance,
  its ``from`` the expression of the emotion event it names as ``previous_utterance_id``, and there is a
  shift exactly where a speaker's expression changed;
* no gaps: within one run, emotion ``index`` values come without holes (and match a ``session`` ``ended``
  record's ``utterances``);
* ids: stable event ids recompute from the ``x-event-id`` recipe.

It never imports the analyzer's code; the tests feed it real MQTT messages.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.contract import asyncapi, payload_schema, resolve, validate

STABLE = ("emotion", "shift", "speaker", "session")  # events with a recomputable id, de-duplicated


def documented_event_id(event: dict[str, Any]) -> str:
    """The event id as a client computes it from the document's ``x-event-id`` recipe alone."""
    recipe = asyncapi()["info"]["x-event-id"]
    name = recipe["name"][event["type"]].format(**event)
    return str(uuid.uuid5(uuid.UUID(recipe["namespace"]), name))


@dataclass
class RunView:
    """What the subscriber knows about one run of one session."""

    emotions: dict[str, dict[str, Any]] = field(default_factory=dict)  # utterance id -> emotion event
    shifts: list[dict[str, Any]] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    session: dict[str, dict[str, Any]] = field(default_factory=dict)  # state -> session record


class DocumentSubscriber:
    """Feed it every message (:meth:`on_message`); read ``accepted``, ``runs`` and :meth:`problems`."""

    def __init__(self) -> None:
        doc = asyncapi()
        self.channels: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        self.filters: list[str] = []
        for op in doc["operations"].values():
            if op["action"] != "send" or {"name": "events"} not in op.get("tags", []):
                continue
            channel = resolve(op["channel"]["$ref"])
            address = channel["address"]
            self.filters.append(re.sub(r"\{[^}]+\}", "+", address))
            pattern = re.escape(address)
            for param in channel.get("parameters", {}):
                pattern = pattern.replace(re.escape("{" + param + "}"), "[^/]+")
            (message,) = channel["messages"].values()
            self.channels.append((re.compile(pattern + "$"), message["$ref"].rsplit("/", 1)[1], payload_schema(message)))
        self.key = doc["info"]["x-duplicate-filter"]["key"]
        self.seen: dict[tuple[str, str], set[tuple[Any, ...]]] = {}  # (session, run_id) -> keys
        self.current_run: dict[str, str] = {}
        self.accepted: list[tuple[str, dict[str, Any], bool]] = []
        self.runs: dict[tuple[str, str], RunView] = {}
        self.duplicates = 0
        self.cleared: list[str] = []
        self.bad_ids: list[str] = []

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        name, schema = next((n, s) for p, n, s in self.channels if p.match(topic))
        if not payload:
            assert name == "speaker", f"empty payload on {topic}"
            self.cleared.append(topic)
            return
        obj = json.loads(payload)
        validate(obj, schema, topic)  # strict: a field the schema does not declare fails too
        if name not in STABLE:
            self.accepted.append((name, obj, retained))
            return
        if obj["event_id"] != documented_event_id(obj):
            self.bad_ids.append(obj["event_id"])
        session, run = obj["session"], obj["run_id"]
        if not retained and self.current_run.get(session) != run:
            for old in [k for k in self.seen if k[0] == session and k[1] != run]:
                del self.seen[old]  # the documented reset: a new run of the session started
            self.current_run[session] = run
        seen = self.seen.setdefault((session, run), set())
        key = tuple(obj[k] for k in self.key)
        if key in seen:
            self.duplicates += 1
            return
        seen.add(key)
        self.accepted.append((name, obj, retained))
        if not retained:
            self._follow(name, obj)

    def _follow(self, name: str, obj: dict[str, Any]) -> None:
        view = self.runs.setdefault((obj["session"], obj["run_id"]), RunView())
        if name == "session":
            view.session[obj["state"]] = obj
        elif name == "emotion":
            view.emotions[obj["utterance_id"]] = obj
            view.indexes.append(obj["index"])
        elif name == "shift":
            view.shifts.append(obj)

    def problems(self) -> list[str]:
        """Everything a robot would trip over: incoherent shifts, gaps, a shift without a change, bad ids."""
        out = [f"event id not from the recipe: {i}" for i in self.bad_ids]
        for (session, run), view in self.runs.items():
            for sh in view.shifts:  # MQTT orders per topic only: judged once everything arrived
                emo, before = view.emotions.get(sh["utterance_id"]), view.emotions.get(sh["previous_utterance_id"])
                if emo is None or before is None or sh["to"] != emo["expression"] or sh["from"] != before["expression"]:
                    out.append(f"{session}/{run}: shift {sh['utterance_id']} {sh['from']} -> {sh['to']} contradicts "
                               f"its emotion events ({before and before['expression']} -> {emo and emo['expression']})")
            if sorted(view.indexes) != list(range(len(view.indexes))):
                out.append(f"{session}/{run}: emotion indexes with a gap: {sorted(view.indexes)}")
            ended = view.session.get("ended")
            if ended is not None and ended["utterances"] != len(view.indexes):
                out.append(f"{session}/{run}: ended after {ended['utterances']} utterances, "
                           f"{len(view.indexes)} emotion events arrived")
            # a shift exactly when the speaker's expression changed: count the changes among emotion events
            last: dict[str, str] = {}
            changes = 0
            for emo in sorted(view.emotions.values(), key=lambda e: e["index"]):
                if emo["speaker"] in last and last[emo["speaker"]] != emo["expression"]:
                    changes += 1
                last[emo["speaker"]] = emo["expression"]
            if changes != len(view.shifts):
                out.append(f"{session}/{run}: {changes} expression changes but {len(view.shifts)} shift events")
        return out
