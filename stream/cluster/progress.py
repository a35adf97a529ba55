"""Per-conversation progress in JetStream KV, written with compare-and-set, and the state blobs.

A conversation's progress record says how far it is committed: the stream sequence of its last
processed input, how many steps the model took, the utterance ids seen lately (re-sends beyond the
stream's de-duplication window are still dropped), which state blob to resume from, and the events of
the last step (a new owner re-publishes them: at-least-once, identical content). Every step is one
``update(key, value, last=revision)``; the server refuses it when anyone else wrote the key since,
which is how a worker learns that it was deposed (:class:`Fenced`): it drops its copy and never
publishes that step's events. Nothing here expires.

State blobs (:mod:`stream.cluster.statecodec`, safetensors) go to the state bucket under a key that
names the conversation and the step, every K steps, *before* the progress record that points to them,
so a stale worker can write a blob but never make anyone resume from it. In the blob header, ``epoch``
holds the step count and ``next_seq`` the stream sequence after the last input it includes.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from stream.cluster.statecodec import StateBlob, decode_state, encode_state
from stream.frames import EventFrame, EventKind

log = logging.getLogger(__name__)

__all__ = ["RECENT_IDS", "Fenced", "Progress", "ProgressStore", "event_frame", "event_record", "session_key"]

RECENT_IDS = 64  # utterance ids remembered per conversation (re-sends older than the stream's 1 h window)


class Fenced(Exception):
    """Another worker wrote this conversation's progress since we read it: we are not its owner."""


def session_key(partition: int, session: str) -> str:
    """A KV key for any session id: ``<partition>.<URL-safe base64 of its UTF-8>`` (KV keys allow few
    characters; the partition prefix lets a new holder of a partition list and fence its conversations)."""
    return f"{partition}.{_key_token(session)}"


def _key_token(session: str) -> str:
    """Any session id as KV key characters: the URL-safe base64 of its UTF-8, unpadded."""
    return base64.urlsafe_b64encode(session.encode("utf-8", "surrogatepass")).decode().rstrip("=")


@dataclass
class Progress:
    """How far a conversation is committed (the JSON value of its progress key)."""

    last_seq: int = 0  # stream sequence of the last input processed (0: none)
    steps: int = 0  # utterances the model processed
    recent: list[str] = field(default_factory=list)  # utterance ids seen lately, oldest first
    blob: str | None = None  # state-bucket key of the latest blob
    blob_steps: int = 0
    blob_seq: int = 0  # stream sequence of the last input the blob includes
    events: list[dict[str, Any]] = field(default_factory=list)  # the last step's events (kind, payload, speaker)
    worker: str = ""  # who wrote it (diagnostics; ownership is the revision, not this field)

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Progress:
        """Raises ``ValueError`` (one line) for a record that is not a progress object of the right types."""
        try:
            obj = json.loads(data)
        except (RecursionError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"progress record is not JSON ({type(exc).__name__})") from None
        if not isinstance(obj, dict) or set(obj) - set(_TYPES):
            raise ValueError("progress record is not an object of the known fields")
        for name, kind in _TYPES.items():
            v = obj.get(name)
            if name in obj and not _is(v, kind):
                raise ValueError(f"progress field {name} has the wrong type ({type(v).__name__})")
        return cls(**obj)

    def remember(self, utterance_id: str) -> None:
        self.recent.append(utterance_id)
        del self.recent[:-RECENT_IDS]


_TYPES: dict[str, str] = {"last_seq": "count", "steps": "count", "recent": "strs", "blob": "str?",
                          "blob_steps": "count", "blob_seq": "count", "events": "dicts", "worker": "str"}


def _is(v: object, kind: str) -> bool:
    if kind == "count":
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if kind == "strs":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if kind == "dicts":
        return isinstance(v, list) and all(isinstance(x, dict) for x in v)
    if kind == "str?":
        return v is None or isinstance(v, str)
    return isinstance(v, str)


def event_record(frame: EventFrame) -> dict[str, Any]:
    """An event as stored in the progress record (re-published verbatim by a new owner)."""
    return {"kind": frame.kind.value, "payload": frame.payload, "speaker": frame.speaker}


def event_frame(session: str, rec: dict[str, Any]) -> EventFrame:
    """Inverse of :func:`event_record` (``KeyError``/``ValueError`` for a record that is not one)."""
    return EventFrame(session_id=session, kind=EventKind(rec["kind"]), payload=rec["payload"], speaker=rec["speaker"])


class ProgressStore:
    """The progress and state buckets of one cluster."""

    def __init__(self, progress: KeyValue, state: KeyValue, *, max_state_bytes: int) -> None:
        self.progress, self.state = progress, state
        self.max_state_bytes = max_state_bytes

    async def load(self, partition: int, session: str) -> tuple[Progress, int]:
        """The committed progress and its revision (``Progress()``, 0 for a new conversation)."""
        try:
            entry = await self.progress.get(session_key(partition, session))
        except KeyNotFoundError:
            return Progress(), 0
        revision = int(entry.revision or 0)
        try:
            return Progress.decode(entry.value or b"{}"), revision
        except ValueError as exc:  # start afresh; the revision still fences the writer we replace
            log.error("conversation %r: %s; its inputs are processed again from the start", session, exc)
            return Progress(), revision

    async def commit(self, partition: int, session: str, progress: Progress, revision: int) -> int:
        """Writes ``progress`` if the key is still at ``revision``; returns the new revision.

        Raises:
            Fenced: someone else wrote it since (a takeover); nothing was written.
        """
        key = session_key(partition, session)
        try:
            if revision == 0:
                return int(await self.progress.create(key, progress.encode()))
            return int(await self.progress.update(key, progress.encode(), last=revision))
        except KeyWrongLastSequenceError:
            raise Fenced(f"conversation {session!r}: progress moved past revision {revision}") from None
        except Exception as exc:  # create() of an existing key: nats-py raises a generic API error
            if "wrong last sequence" in str(exc).lower() or "key exists" in str(exc).lower():
                raise Fenced(f"conversation {session!r}: progress exists (revision {revision} is stale)") from None
            raise

    async def fence(self, partition: int) -> int:
        """Rewrites every progress record of a partition (one compare-and-set each) so that a commit begun
        by the partition's previous holder fails; returns how many there were."""
        try:
            keys = await self.progress.keys(filters=[f"{partition}.>"])
        except Exception:  # noqa: BLE001 - nats-py raises NoKeysError for an empty bucket
            keys = []
        for key in keys:
            while True:
                try:
                    entry = await self.progress.get(key)
                    await self.progress.update(key, entry.value or b"", last=int(entry.revision or 0))
                    break
                except KeyNotFoundError:
                    break
                except KeyWrongLastSequenceError:
                    continue  # the old holder committed meanwhile: read again
        return len(keys)

    async def put_blob(self, blob: StateBlob) -> str:
        """Stores a state blob under a key of its own; returns the key.

        The key is new for every blob (step count and a random part), so a stale worker saving the same
        step never overwrites the blob a committed progress record points to.
        """
        key = f"b.{_key_token(blob.session)}.{blob.epoch}.{secrets.token_hex(4)}"
        await self.state.put(key, encode_state(blob, max_bytes=self.max_state_bytes))
        return key

    async def get_blob(self, session: str, key: str) -> StateBlob:
        """Raises ``StateError``/``KeyNotFoundError`` for a blob that is gone or unusable."""
        entry = await self.state.get(key)
        return decode_state(entry.value or b"", expect_session=session, max_bytes=self.max_state_bytes)

    async def drop_blob(self, key: str) -> None:
        """Removes a blob nobody resumes from any more; the purge marker itself expires after a minute
        (per-message TTL, server 2.11+), so replaced blobs leave nothing behind."""
        await self.state.purge(key, msg_ttl=60.0)
