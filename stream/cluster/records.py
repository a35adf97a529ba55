"""The small retained JSON records workers coordinate through (their topics: :mod:`stream.mqtt.topics`).

Everything a worker knows about the cluster comes from the broker: no coordinator, no shared disk.
Records are tiny JSON objects (``"v": 1``) so that any MQTT client (``mosquitto_sub``) can inspect them.

Topic layout (``<root>`` = ``pcgnet``; ``<s>`` = a session id encoded by :func:`stream.mqtt.topics.topic_level`)::

    <root>/<s>/in/utterance          input (published by an ASR/agent; MQTT 5 user property "seq" optional)
    <root>/<s>/owner                 retained OwnerRecord: who owns the conversation, at which epoch
    <root>/<s>/state                 retained state blob (stream.cluster.statecodec): where to resume
    <root>/<s>/ack                   retained AckRecord: inputs below next_seq are durably processed
    <root>/$cluster/workers/<id>     retained WorkerRecord "online"; the last will sets it "offline"
    <root>/$cluster/sync/<id>        a worker's private barrier topic (never retained)

``$cluster`` can never be a session level: :func:`~stream.mqtt.topics.topic_level` escapes a leading ``$``.
The 4-level worker topics never match the 3-level ``<root>/+/owner`` filters either.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "AckRecord",
    "OwnerRecord",
    "RecordError",
    "WorkerRecord",
    "rendezvous_score",
    "seq_properties",
]

RECORD_VERSION = 1
MAX_RECORD_BYTES = 4096
SEQ_PROPERTY = "seq"
"""MQTT 5 user property carrying an input's publisher sequence number."""


class RecordError(ValueError):
    """A record on a cluster topic that cannot be used (named topic, one line)."""


def seq_properties(seq: int | None) -> Properties | None:
    """PUBLISH properties carrying ``seq`` as the :data:`SEQ_PROPERTY` user property (None for no seq)."""
    if seq is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [(SEQ_PROPERTY, str(seq))]
    return props


def rendezvous_score(session: str, worker_id: str) -> int:
    """Highest-random-weight score: every worker computes the same ranking of workers for a session.

    Used twice: to pick which live worker adopts an orphaned conversation, and to break ties between
    two claims of the same epoch (so ties do not always favour one worker).
    """
    digest = hashlib.blake2b(f"{session}\x00{worker_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# -- records ------------------------------------------------------------------------------------------


def _now() -> float:
    return round(time.time(), 3)


def _dump(record: WorkerRecord | OwnerRecord | AckRecord) -> bytes:
    return json.dumps({"v": RECORD_VERSION, **asdict(record)}, separators=(",", ":")).encode()


def _load(payload: bytes | bytearray | str, what: str, topic: str) -> dict[str, Any]:
    if isinstance(payload, str):
        payload = payload.encode()
    if len(payload) > MAX_RECORD_BYTES:
        raise RecordError(f"{what} on {topic[:120]!r} is {len(payload)} bytes, limit {MAX_RECORD_BYTES}")
    try:
        obj = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RecordError(f"{what} on {topic[:120]!r} is not JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{what} on {topic[:120]!r} is not a JSON object")
    if obj.get("v") != RECORD_VERSION:
        raise RecordError(f"{what} on {topic[:120]!r} has version {obj.get('v')!r}, expected {RECORD_VERSION}")
    return obj


def _at(obj: Mapping[str, Any], what: str) -> float:
    at = obj.get("at") or 0.0
    try:
        value = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else math.nan
    except OverflowError:  # an integer beyond float range
        value = math.nan
    if not math.isfinite(value):
        raise RecordError(f"{what}: field 'at' must be a finite number of seconds, got {str(at)[:40]!r}")
    return value


def _field(obj: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"{what}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker's liveness (retained on ``<root>/$cluster/workers/<id>``).

    ``incarnation`` is new on every connection: a worker that reconnects (or restarts with the same id)
    is a new life, so conversations owned by its previous life count as orphaned.
    """

    worker: str
    incarnation: str
    status: Literal["online", "offline"]
    at: float = 0.0
    pid: int | None = None

    def encode(self) -> bytes:
        return _dump(self)

    @classmethod
    def decode(cls, payload: bytes | bytearray | str, topic: str = "?") -> WorkerRecord:
        obj = _load(payload, "worker record", topic)
        what = f"worker record on {topic[:120]!r}"
        status = obj.get("status")
        if status not in ("online", "offline"):
            raise RecordError(f"{what}: status must be 'online' or 'offline', got {status!r}")
        pid = obj.get("pid")
        return cls(_field(obj, "worker", str, what), _field(obj, "incarnation", str, what), status,
                   _at(obj, what), pid if isinstance(pid, int) else None)


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """Who owns a conversation (retained on ``<root>/<s>/owner``).

    Records are totally ordered by :meth:`rank` = (epoch, rendezvous score of the worker). Every change
    of ownership (claim, release) bumps the epoch; two claims of the same epoch (a race) are ordered by
    the score, so every worker that has seen both agrees on the winner without talking to the other.
    """

    session: str
    worker: str
    incarnation: str
    epoch: int
    status: Literal["owned", "released"] = "owned"
    at: float = 0.0

    def rank(self) -> tuple[int, int]:
        return (self.epoch, rendezvous_score(self.session, self.worker))

    def same_claim(self, other: OwnerRecord | None) -> bool:
        return (other is not None and other.worker == self.worker and other.incarnation == self.incarnation
                and other.epoch == self.epoch and other.status == self.status)

    def encode(self) -> bytes:
        return _dump(self)

    @classmethod
    def claim(cls, session: str, worker: str, incarnation: str, epoch: int) -> OwnerRecord:
        return cls(session, worker, incarnation, epoch, "owned", _now())

    @classmethod
    def decode(cls, payload: bytes | bytearray | str, topic: str = "?") -> OwnerRecord:
        obj = _load(payload, "owner record", topic)
        what = f"owner record on {topic[:120]!r}"
        status = obj.get("status")
        if status not in ("owned", "released"):
            raise RecordError(f"{what}: status must be 'owned' or 'released', got {status!r}")
        epoch = _field(obj, "epoch", int, what)
        if epoch < 1:
            raise RecordError(f"{what}: epoch must be >= 1, got {epoch}")
        return cls(_field(obj, "session", str, what), _field(obj, "worker", str, what),
                   _field(obj, "incarnation", str, what), epoch, status, _at(obj, what))


@dataclass(frozen=True, slots=True)
class AckRecord:
    """Progress of a conversation (retained on ``<root>/<s>/ack``), published after the state blob.

    Every input with ``seq < next_seq`` is part of the published state, so a publisher may forget it;
    inputs at or above ``next_seq`` must be kept (and re-sent when an ack from a new epoch arrives).
    """

    session: str
    next_seq: int
    epoch: int
    worker: str
    at: float = 0.0

    def encode(self) -> bytes:
        return _dump(self)

    @classmethod
    def decode(cls, payload: bytes | bytearray | str, topic: str = "?") -> AckRecord:
        obj = _load(payload, "ack record", topic)
        what = f"ack record on {topic[:120]!r}"
        next_seq = _field(obj, "next_seq", int, what)
        if next_seq < 0:
            raise RecordError(f"{what}: next_seq must be >= 0, got {next_seq}")
        return cls(_field(obj, "session", str, what), next_seq, _field(obj, "epoch", int, what),
                   _field(obj, "worker", str, what), _at(obj, what))
