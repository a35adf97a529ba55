"""What the analyzer puts on the wire and takes from it: one route for outgoing frames, one conversion of an
input message into an :class:`~stream.frames.Utterance`, the status record.

Every deployment (``live.py`` with ``--mqtt`` / ``--transcript mqtt``, the cluster workers) goes through
these functions, so the same input gives the same utterance id, times and event ids everywhere, and
every payload is the JSON of docs/asyncapi.yaml (``allow_nan=False``: NaN is not JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..capture.base import default_utterance_id, estimate_duration_s
from ..events import SCHEMA_VERSION, utc_now_iso
from ..frames import ErrorFrame, EventKind, Utterance
from ..sinks.base import SinkFrame
from ..sinks.jsonl import dumps, frame_json
from . import topics
from .inbound import InboundUtterance

__all__ = ["Outbound", "route", "status_payload", "to_utterance"]


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to publish: topic, JSON payload, retain flag, MQTT 5 message expiry (None: none)."""

    topic: str
    payload: bytes
    retain: bool = False
    expiry_s: int | None = None


def route(frame: SinkFrame, *, root: str = topics.DEFAULT_ROOT, worker_id: str | None = None,
          speaker_expiry_s: int | None = None) -> Outbound:
    """The topic, payload and flags of an outgoing frame (docs/asyncapi.yaml).

    Error frames become ``error`` events on ``<root>/<session>/error``; speaker state and the session record
    are retained and expire after ``speaker_expiry_s`` (so a killed run's state does not stay forever).
    """
    payload = dumps(frame_json(frame, worker_id)).encode("utf-8")
    session = frame.session_id or "_"
    if isinstance(frame, ErrorFrame):
        return Outbound(topics.error_topic(session, root=root), payload)
    if frame.kind is EventKind.EMOTION:
        return Outbound(topics.emotion_topic(session, root=root), payload)
    if frame.kind is EventKind.SHIFT:
        return Outbound(topics.shift_topic(session, root=root), payload)
    if frame.kind is EventKind.SESSION:
        run = str(frame.payload.get("run_id") or "_")
        return Outbound(topics.run_topic(session, run, root=root), payload, retain=True,
                        expiry_s=speaker_expiry_s or None)
    return Outbound(topics.speaker_topic(session, frame.speaker or "_", root=root), payload, retain=True,
                    expiry_s=speaker_expiry_s or None)


def status_payload(state: str, client_id: str, *, connected_at: str, worker_id: str | None = None,
                   health: dict[str, Any] | None = None, will: bool = False, keepalive_s: int | None = None,
                   status_interval_s: float | None = None) -> bytes:
    """The retained ``<root>/$status/<client_id>`` record of one process.

    ``keepalive_s`` / ``status_interval_s`` tell a subscriber how long silence may last: the broker sends the
    will at most 1.5 x keepalive after the process stopped answering, and an "online" record older than a
    few heartbeat intervals means a stalled process (docs/events.md, "Liveness").

    The last will (``will=True``) is fixed when the connection is made, but the broker publishes it
    later, when the analyzer is gone; it therefore has no ``at`` (the time it was made) and says
    ``reason: lost``; a clean ``offline`` says ``reason: exit``.
    """
    d: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "type": "status", "state": state, "client_id": client_id,
                         "connected_at": connected_at}
    if not will:
        d["at"] = utc_now_iso()
    if state == "offline":
        d["reason"] = "lost" if will else "exit"
    if worker_id is not None:
        d["worker_id"] = worker_id
    if keepalive_s is not None:
        d["keepalive_s"] = int(keepalive_s)
    if status_interval_s is not None:
        d["status_interval_s"] = float(status_interval_s)
    if health:
        d.update(health)
    return json.dumps(d, allow_nan=False).encode("utf-8")


def to_utterance(msg: InboundUtterance, *, number: int, prev_end_s: float, ended_ns: int | None = None
                 ) -> Utterance:
    """A validated input message as the runtime's :class:`Utterance`.

    Args:
        msg: the validated message.
        number: its 1-based position among the session's input messages (gives the default id).
        prev_end_s: end time of the session's previous utterance (0.0 for the first).
        ended_ns: monotonic arrival time (latency is measured from it); the frame's creation when None.

    Missing times are estimated from the conversation itself, never from a wall clock, so every process
    that handles the conversation derives the same ones: an utterance without ``t_start`` starts where the
    previous one ended (or its duration before ``t_end``); without ``t_end`` it lasts the duration its text
    takes to speak (:func:`~stream.capture.base.estimate_duration_s`).
    """
    dur = estimate_duration_s(msg.text)
    if msg.t_start is not None:
        t_start = msg.t_start
    else:
        t_start = prev_end_s if msg.t_end is None else max(0.0, min(msg.t_end, max(prev_end_s, msg.t_end - dur)))
    t_end = msg.t_end if msg.t_end is not None else t_start + dur
    return Utterance(session_id=msg.session_id, utterance_id=msg.utterance_id or default_utterance_id(number),
                     speaker=msg.speaker, t_start=round(t_start, 3), t_end=round(t_end, 3), text=msg.text,
                     ended_ns=ended_ns)
