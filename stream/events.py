"""Build the event objects published on MQTT and written to the JSONL log (contract: docs/asyncapi.yaml,
JSON Schemas in docs/schemas/, prose in docs/events.md).

Events are plain JSON objects so that every consumer (a robot, a dashboard, ``jq``) reads them the
same way. Field names follow ROS4HRI's Expression message (``expression``, ``valence``, ``arousal``,
``confidence``) and category names follow W3C EmotionML's vocabularies.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

EventPayload: TypeAlias = dict[str, Any]
"""One event object: a JSON object whose fields are fixed per ``type`` by docs/schemas/v1/<type>.json (every
emitted message is validated against it in the tests, tests/contract.py). A plain dict, not a TypedDict per
kind, because sinks treat events generically (serialise, route by type) and the schema is the contract."""

SCHEMA_VERSION = 1
"""Bumped on any incompatible change of the event objects (docs/events.md keeps the history)."""

EVENT_NAMESPACE = uuid.UUID("6f1c3a52-3c1e-4d7e-9a55-2f0b7d1e9c40")
"""uuid5 namespace of event ids: the same (session, utterance, kind) always gives the same id. Documented
(docs/asyncapi.yaml ``x-event-id``) so that clients can recompute ids."""

# Model label -> EmotionML category name. The "big6" vocabulary (anger, disgust, fear, happiness,
# sadness, surprise) plus "neutral" and two IEMOCAP classes, named as EmotionML names categories.
EXPRESSION_NAMES: dict[str, str] = {
    "neutral": "neutral", "neu": "neutral",
    "joy": "happiness", "hap": "happiness", "happiness": "happiness", "happy": "happiness",
    "surprise": "surprise",
    "fear": "fear",
    "sadness": "sadness", "sad": "sadness",
    "disgust": "disgust",
    "anger": "anger", "ang": "anger",
    "exc": "excitement", "excitement": "excitement",
    "fru": "frustration", "frustration": "frustration",
}

# EmotionML category -> (valence, arousal) in [-1, 1], placed on Russell's circumplex (approximate
# positions of the category prototypes; neutral at the origin). An event's valence/arousal is the
# expectation of these under the predicted class probabilities, so uncertain predictions move toward
# the centre instead of jumping between corners.
VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happiness": (0.8, 0.5),
    "excitement": (0.6, 0.9),
    "surprise": (0.3, 0.8),
    "fear": (-0.6, 0.6),
    "anger": (-0.6, 0.8),
    "frustration": (-0.5, 0.4),
    "disgust": (-0.7, 0.2),
    "sadness": (-0.7, -0.5),
}

MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}


def expression_name(label: str) -> str:
    """EmotionML-style name of a model label (unknown labels pass through)."""
    return EXPRESSION_NAMES.get(label.lower(), label.lower())


def event_id(session: str, utterance_id: str, kind: str) -> str:
    """Stable id: replays and retries of the same utterance give the same id, so duplicates can be dropped.

    ``uuid5(EVENT_NAMESPACE, "<session>\\n<utterance_id>\\n<kind>")`` (UTF-8 name, raw ids, not topic-encoded);
    for ``speaker`` records the middle part is ``"<speaker>\\n<utterance_id>"``.
    """
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{session}\n{utterance_id}\n{kind}"))


def new_run_id() -> str:
    """A fresh run id: names one incarnation of a session (docs/asyncapi.yaml: the duplicate-filter reset rule)."""
    return uuid.uuid4().hex[:16]


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def valence_arousal(scores: Mapping[str, float]) -> tuple[float, float]:
    """Probability-weighted circumplex position of a score distribution keyed by expression names."""
    v = a = 0.0
    for name, p in scores.items():
        cv, ca = VALENCE_AROUSAL.get(name, (0.0, 0.0))
        v += p * cv
        a += p * ca
    return round(v, 4), round(a, 4)


def _base(kind: str, session: str, utterance_id: str, run_id: str | None, worker_id: str | None
          ) -> EventPayload:
    d: EventPayload = {
        "schema_version": SCHEMA_VERSION,
        "type": kind,
        "event_id": event_id(session, utterance_id, kind),
        "session": session,
        "utterance_id": utterance_id,
    }
    if run_id is not None:  # always set by the analyzer (SessionState.run_id); optional for hand-made events
        d["run_id"] = run_id
    if worker_id is not None:
        d["worker_id"] = worker_id
    return d


def emotion_event(*, session: str, utterance_id: str, speaker: str, t_start: float, t_end: float,
                  text: str | None, labels: Sequence[str], probs: Sequence[float], modalities: Sequence[str],
                  index: int, latency_ms: float, run_id: str | None = None, worker_id: str | None = None,
                  expression_index: int | None = None, shift_probability: float | None = None,
                  overlap: bool = False) -> EventPayload:
    """One utterance's emotion (topic ``pcgnet/<session>/emotion``).

    ``expression_index``: the reported class, decided with the shift by the shift rule (pcgnet.shift; the
    top score when None); ``shift_probability``: the rule's probability that the speaker left their
    previous expression (None on a speaker's first turn); ``overlap``: another voice overlapped this speech
    (the key is present only then, so other events' payloads are unchanged)."""
    names = [expression_name(lb) for lb in labels]
    scores = {n: round(float(p), 5) for n, p in zip(names, probs, strict=True)}
    best = max(range(len(labels)), key=lambda i: probs[i]) if expression_index is None else int(expression_index)
    valence, arousal = valence_arousal(scores)
    d = _base("emotion", session, utterance_id, run_id, worker_id)
    d.update({
        "speaker": speaker,
        "t_start": round(float(t_start), 3),
        "t_end": round(float(t_end), 3),
        "index": index,
        "text": text,
        "emitted_at": utc_now_iso(),
        "expression": names[best],
        "label": labels[best],
        "confidence": round(float(probs[best]), 5),
        "scores": scores,
        "valence": valence,
        "arousal": arousal,
        "shift_probability": None if shift_probability is None else round(float(shift_probability), 5),
        "modalities": [MODALITY_NAMES.get(m, m) for m in modalities],
        "latency_ms": round(float(latency_ms), 2),
    })
    if overlap:
        d["overlap"] = True
    return d


def shift_event(*, session: str, utterance_id: str, speaker: str, t_start: float, t_end: float,
                from_expression: str, to_expression: str, previous_utterance_id: str,
                probability: float | None, latency_ms: float, run_id: str | None = None,
                worker_id: str | None = None, profile: str | None = None) -> EventPayload:
    """A speaker's reported expression changed since their previous utterance (topic ``pcgnet/<session>/shift``);
    ``to`` is this utterance's expression, ``probability`` the shift rule's and ``profile`` its operating point."""
    d = _base("shift", session, utterance_id, run_id, worker_id)
    d.update({
        "speaker": speaker,
        "t_start": round(float(t_start), 3),
        "t_end": round(float(t_end), 3),
        "emitted_at": utc_now_iso(),
        "from": from_expression,
        "to": to_expression,
        "previous_utterance_id": previous_utterance_id,
        "probability": None if probability is None else round(float(probability), 5),
        "profile": profile,
        "latency_ms": round(float(latency_ms), 2),
    })
    return d


def session_event_id(session: str, run_id: str, state: str) -> str:
    """``uuid5(EVENT_NAMESPACE, "<session>\\n<run_id>\\nsession.<state>")``: one id per run and state."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{session}\n{run_id}\nsession.{state}"))


def session_event(*, session: str, run_id: str, state: str, started_at: str, process: str | None,
                  utterances: int = 0, reason: str | None = None, worker_id: str | None = None) -> EventPayload:
    """A run of a session ``started`` (its first utterance) or ``ended`` (retained on ``pcgnet/<session>/session``).

    ``started_at`` is the wall clock of the run's start: an event's ``t_start`` / ``t_end`` (seconds since the
    session started) plus ``started_at`` is its wall-clock time. ``process`` names the analyzer process (its
    status topic's client id), so a client can tell from that process's last will that the run died."""
    d: EventPayload = {"schema_version": SCHEMA_VERSION, "type": "session",
                       "event_id": session_event_id(session, run_id, state), "session": session, "run_id": run_id}
    if worker_id is not None:
        d["worker_id"] = worker_id
    d.update({"state": state, "started_at": started_at, "emitted_at": utc_now_iso(), "process": process,
              "utterances": utterances})
    if reason is not None:
        d["reason"] = reason
    return d


def speaker_state(*, session: str, speaker: str, emotion: Mapping[str, Any], trend: str, utterances: int,
                  worker_id: str | None = None, process: str | None = None) -> EventPayload:
    """Current state of one speaker (retained on ``pcgnet/<session>/speakers/<speaker>``), after ``emotion``."""
    d = _base("speaker", session, emotion["utterance_id"], emotion.get("run_id"), worker_id)
    d["event_id"] = event_id(session, f"{speaker}\n{emotion['utterance_id']}", "speaker")
    d.update({
        "speaker": speaker,
        "updated_at": emotion["emitted_at"],
        "expression": emotion["expression"],
        "confidence": emotion["confidence"],
        "valence": emotion["valence"],
        "arousal": emotion["arousal"],
        "trend": trend,
        "utterances": utterances,
        "process": process,
    })
    return d


def error_event(*, session: str, stage: str, category: str, message: str,
                worker_id: str | None = None, utterance_id: str | None = None) -> EventPayload:
    """A problem a consumer should know about (topic ``pcgnet/<session>/error``); ids are random."""
    d: EventPayload = {
        "schema_version": SCHEMA_VERSION,
        "type": "error",
        "event_id": str(uuid.uuid4()),
        "session": session,
        "stage": stage,
        "category": category,
        "message": message,
        "emitted_at": utc_now_iso(),
    }
    if worker_id is not None:
        d["worker_id"] = worker_id
    if utterance_id is not None:
        d["utterance_id"] = utterance_id
    return d
