"""What a worker keeps per conversation: the inputs it received and the conversation it owns or claims."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import aiomqtt

from stream.cluster.backend import Conversation
from stream.cluster.records import SEQ_PROPERTY, OwnerRecord
from stream.cluster.sequencer import Sequencer
from stream.cluster.statecodec import StateBlob
from stream.mqtt.inbound import InboundError, InboundUtterance

__all__ = ["Input", "LocalConversation", "dedupe_key", "seq_of"]


@dataclass
class Input:
    """One input message as received: raw payload kept for forwarding, parsed form for the backend."""

    seq: int | None
    payload: bytes
    parsed: InboundUtterance | InboundError


@dataclass
class LocalConversation:
    """A conversation this worker owns or is claiming."""

    session: str
    claim: OwnerRecord | None = None
    owned: bool = False
    inbox: list[Input] = field(default_factory=list)  # inputs received while claiming
    seq: Sequencer[Input] | None = None
    conv: Conversation | None = None
    best_state: StateBlob | None = None
    state_error: str | None = None
    last_input: float = field(default_factory=time.monotonic)
    busy: bool = False
    unsaved: int = 0  # steps not yet in a published state blob


def seq_of(message: aiomqtt.Message) -> int | None:
    """The publisher's sequence number (MQTT 5 user property ``seq``), or None.

    Raises:
        ValueError: the property is present but not a non-negative integer.
    """
    props = message.properties
    pairs = getattr(props, "UserProperty", None) if props is not None else None
    for key, value in pairs or ():
        if key == SEQ_PROPERTY:
            if not value.isdigit() or len(value) > 15:
                raise ValueError(f"user property seq={value[:20]!r} is not a non-negative integer")
            return int(value)
    return None


def dedupe_key(item: Input) -> str:
    """What identifies an input for the sequencer: its seq, else its utterance id, else its payload digest."""
    if item.seq is not None:
        return f"#{item.seq}"
    if isinstance(item.parsed, InboundUtterance) and item.parsed.utterance_id:
        return "id:" + item.parsed.utterance_id
    return "sha:" + hashlib.blake2b(item.payload, digest_size=12).hexdigest()
