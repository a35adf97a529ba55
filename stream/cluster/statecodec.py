"""The conversation state blob: one safetensors file, header metadata in JSON, never pickle.

A worker that takes a conversation over resumes from this blob (in the JetStream state bucket,
:mod:`stream.cluster.progress`), so it carries everything the next step depends on: the backend's arrays
(the model's window, recurrent state, speaker slots and personas as ``ConversationState.to_tensors()``
gives them) plus a JSON header with the position in the input stream, the step count and the backend's
own small metadata (header key "engine").

Layout: a standard safetensors file (8-byte little-endian header length, JSON header, raw buffers);
the cluster header is the JSON string under ``__metadata__["pcgnet.cluster"]``. Any safetensors reader
can inspect it, and decoding never executes code. Blobs above ``max_bytes`` are refused on both sides,
so one conversation cannot make a value that hurts the server.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from stream.params import WorkerParams

__all__ = ["FORMAT", "VERSION", "StateBlob", "StateError", "decode_state", "encode_state"]

FORMAT = "pcgnet-conversation-state"
VERSION = 1
META_KEY = "pcgnet.cluster"
DEFAULT_MAX_BYTES = WorkerParams.max_state_bytes  # a 16-utterance window of 1024-d text features is ~70 KiB


class StateError(ValueError):
    """A state blob that cannot be used (one line, names the session/topic)."""


@dataclass
class StateBlob:
    """Decoded state of one conversation.

    Attributes:
        session: The conversation it belongs to (checked against the topic).
        epoch: Inputs numbered up to this blob (the header key keeps its wire name "epoch").
        worker: Worker that wrote it.
        next_seq: Stream sequence after the last input the blob includes (replay starts there).
        recent: Utterance ids seen lately (de-duplication of re-sends).
        engine: The backend's JSON metadata (ints, ids, names; see ``Snapshot.meta``); named after its
            header key, which is wire format.
        arrays: The backend's arrays.
    """

    session: str
    epoch: int
    worker: str
    next_seq: int
    recent: list[str] = field(default_factory=list)
    engine: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def encode_state(blob: StateBlob, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Serialises a state blob; ``StateError`` if it is larger than ``max_bytes``."""
    header = {
        "format": FORMAT, "version": VERSION, "session": blob.session, "epoch": blob.epoch,
        "worker": blob.worker, "next_seq": blob.next_seq, "recent": blob.recent, "engine": blob.engine,
    }
    arrays = {k: np.ascontiguousarray(v) for k, v in blob.arrays.items()}
    data = st_save(arrays, metadata={META_KEY: json.dumps(header, separators=(",", ":"))})
    if len(data) > max_bytes:
        raise StateError(f"state of session {blob.session!r} is {len(data)} bytes, limit {max_bytes}")
    return data


def _metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise StateError("state blob shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 1 << 22:
        raise StateError(f"state blob header length {n} does not fit the {len(data)}-byte blob")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StateError("state blob header is not JSON") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise StateError("state blob has no metadata (not written by stream.cluster)")
    return meta


def _header(data: bytes) -> dict[str, Any]:
    """The cluster header of a blob, format and version checked."""
    raw = _metadata(data).get(META_KEY)
    if not isinstance(raw, str):
        raise StateError("no pcgnet.cluster header")
    header = json.loads(raw)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StateError(f"format is {header.get('format') if isinstance(header, dict) else None!r}, "
                         f"expected {FORMAT!r}")
    if header.get("version") != VERSION:
        raise StateError(f"version {header.get('version')!r} is not supported (expected {VERSION})")
    return header


def _count(header: dict[str, Any], name: str) -> int:
    v = header.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise StateError(f"{name} must be an int >= 0, got {v!r}")
    return v


def decode_state(data: bytes | bytearray, *, expect_session: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> StateBlob:
    """Parses and validates a state blob; every problem is a one-line ``StateError``."""
    data = bytes(data)
    where = f"state of session {expect_session!r}" if expect_session is not None else "state blob"
    if len(data) > max_bytes:
        raise StateError(f"{where} is {len(data)} bytes, limit {max_bytes}")
    try:
        header = _header(data)
        session, worker = header.get("session"), header.get("worker")
        recent, engine = header.get("recent", []), header.get("engine", {})
        if not isinstance(session, str) or not isinstance(worker, str):
            raise StateError("session and worker must be strings")
        epoch, next_seq = _count(header, "epoch"), _count(header, "next_seq")
        if not isinstance(recent, list) or not all(isinstance(k, str) for k in recent):
            raise StateError("recent must be a list of strings")
        if not isinstance(engine, dict):
            raise StateError("engine metadata must be an object")
        if expect_session is not None and session != expect_session:
            raise StateError(f"blob belongs to session {session!r}")
        arrays = st_load(data)
    except StateError as exc:
        raise StateError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt buffers
        raise StateError(f"{where}: unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None
    return StateBlob(session, epoch, worker, next_seq, list(recent), engine, dict(arrays))
