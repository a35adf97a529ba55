"""The seam between the cluster layer and whatever analyses a conversation.

The cluster layer only moves conversations between workers; it needs three things from an engine:
open a conversation (fresh, or from a snapshot), process one validated utterance into events, and
snapshot the conversation as arrays + JSON. :class:`ToyEngine` implements this with a small
deterministic recurrent model so the coordination can be tested in seconds without torch;
``stream.cluster.pcgnet_engine`` plugs in the causal PCGNet.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream.events import emotion_event, new_run_id
from stream.frames import EventFrame, EventKind
from stream.mqtt.inbound import InboundUtterance
from stream.mqtt.wire import to_utterance

__all__ = ["Conversation", "ConversationEngine", "Snapshot", "ToyEngine"]


@dataclass
class Snapshot:
    """A conversation's resumable state: arrays (saved as safetensors) and small JSON metadata."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class Conversation(Protocol):
    """One conversation's analysis state inside an engine. Calls for one conversation never overlap."""

    async def process(self, utterance: InboundUtterance, number: int) -> list[EventFrame]:
        """Steps the conversation by its ``number``-th (1-based) input; returns its events (emotion first).

        The utterance id and missing times come from :func:`stream.mqtt.wire.to_utterance`, as in ``live.py``.
        """
        ...

    async def snapshot(self) -> Snapshot:
        """Everything the next step depends on, so another process can resume exactly here."""
        ...


class ConversationEngine(Protocol):
    """Creates conversations; one engine per worker process (it holds the model).

    Events it makes carry the worker id it was built with.
    """

    name: str

    async def run(self) -> None:
        """Background work (micro-batchers) for the worker's lifetime; returns when cancelled."""
        ...

    async def open(self, session_id: str, snapshot: Snapshot | None) -> Conversation:
        """A new conversation (``snapshot`` is None) or one resumed from a snapshot.

        Raises:
            ValueError: the snapshot does not belong to this engine (wrong name/shape); one line.
        """
        ...

    def close(self, session_id: str) -> None:
        """Forgets a conversation this worker no longer owns."""
        ...


# -- a deterministic stand-in -------------------------------------------------------------------------

TOY_LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")


def _embed(text: str, dim: int) -> np.ndarray:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=dim).digest()
    return (np.frombuffer(digest, dtype=np.uint8).astype(np.float64) - 127.5) / 64.0


class ToyEngine:
    """A tiny recurrent classifier over hashed text: deterministic, stateful, numpy only.

    Its prediction for an utterance depends on every earlier utterance through the hidden state, so a
    hand-off that lost or repeated an utterance, or restored the wrong state, changes later predictions.

    Args:
        dim: Hidden size.
        seed: Weights seed (all workers must use the same).
        work_s: Busy time per step, to imitate a model's cost in coordination benchmarks.
    """

    name = "toy"

    def __init__(self, worker_id: str | None = None, *, dim: int = 16, seed: int = 0, work_s: float = 0.0) -> None:
        self.worker_id = worker_id
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="toy-engine")
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.w = rng.normal(0, 0.5 / np.sqrt(dim), (dim, dim))
        self.u = rng.normal(0, 1.0 / np.sqrt(dim), (dim, dim))
        self.v = rng.normal(0, 1.0, (len(TOY_LABELS), dim))
        self.work_s = work_s

    async def run(self) -> None:
        await asyncio.Event().wait()

    def close(self, session_id: str) -> None:
        pass

    async def open(self, session_id: str, snapshot: Snapshot | None) -> ToyConversation:
        if snapshot is None:
            return ToyConversation(self, session_id, np.zeros(self.dim), 0, {}, 0.0, new_run_id())
        h = snapshot.arrays.get("h")
        if h is None or h.shape != (self.dim,) or snapshot.meta.get("engine") != self.name:
            raise ValueError(f"snapshot of session {session_id!r} is not a {self.name} state of dim {self.dim}")
        meta = snapshot.meta
        return ToyConversation(self, session_id, h.astype(np.float64), int(meta.get("index", 0)),
                               dict(meta.get("speakers", {})), float(meta.get("prev_end", 0.0)),
                               str(meta.get("run_id") or new_run_id()))


class ToyConversation:
    def __init__(self, engine: ToyEngine, session: str, h: np.ndarray, index: int, speakers: dict[str, int],
                 prev_end: float, run_id: str) -> None:
        self.engine, self.session, self.h, self.index, self.speakers = engine, session, h, index, speakers
        self.prev_end, self.run_id = prev_end, run_id

    async def process(self, utterance: InboundUtterance, number: int) -> list[EventFrame]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.engine._pool, self._step, utterance, number)

    def _step(self, msg: InboundUtterance, number: int) -> list[EventFrame]:
        t0 = time.perf_counter()
        utterance = to_utterance(msg, number=number, prev_end_s=self.prev_end)
        e = self.engine
        slot = self.speakers.setdefault(utterance.speaker, len(self.speakers))
        x = _embed(msg.text, e.dim)
        x[slot % e.dim] += 1.0
        self.h = np.tanh(e.w @ self.h + e.u @ x)
        logits = e.v @ self.h
        p = np.exp(logits - logits.max())
        p /= p.sum()
        while time.perf_counter() - t0 < e.work_s:
            pass
        ev = emotion_event(session=self.session, utterance_id=utterance.utterance_id, speaker=utterance.speaker,
                           t_start=utterance.t_start, t_end=utterance.t_end, text=utterance.text, labels=TOY_LABELS,
                           probs=p.tolist(), modalities=["t"], index=self.index,
                           latency_ms=(time.perf_counter() - t0) * 1000, run_id=self.run_id, worker_id=e.worker_id)
        self.index += 1
        self.prev_end = utterance.t_end
        return [EventFrame(session_id=self.session, kind=EventKind.EMOTION, payload=ev)]

    async def snapshot(self) -> Snapshot:
        return Snapshot({"h": self.h.copy()}, {"engine": ToyEngine.name, "index": self.index,
                                                 "speakers": dict(self.speakers), "prev_end": self.prev_end,
                                                 "run_id": self.run_id})
