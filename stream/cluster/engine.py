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

from stream.events import emotion_event
from stream.frames import EventFrame, EventKind
from stream.inbound import InboundUtterance

__all__ = ["Conversation", "ConversationEngine", "Snapshot", "ToyEngine"]


@dataclass
class Snapshot:
    """A conversation's resumable state: arrays (saved as safetensors) and small JSON metadata."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class Conversation(Protocol):
    """One conversation's analysis state inside an engine. Calls for one conversation never overlap."""

    async def process(self, utterance: InboundUtterance, utterance_id: str) -> list[EventFrame]:
        """Steps the conversation by one utterance; returns its events (emotion first)."""
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
            return ToyConversation(self, session_id, np.zeros(self.dim), 0, {})
        h = snapshot.arrays.get("h")
        if h is None or h.shape != (self.dim,) or snapshot.meta.get("engine") != self.name:
            raise ValueError(f"snapshot of session {session_id!r} is not a {self.name} state of dim {self.dim}")
        speakers = snapshot.meta.get("speakers", {})
        return ToyConversation(self, session_id, h.astype(np.float64), int(snapshot.meta.get("index", 0)),
                               dict(speakers))


class ToyConversation:
    def __init__(self, engine: ToyEngine, session: str, h: np.ndarray, index: int, speakers: dict[str, int]):
        self.engine, self.session, self.h, self.index, self.speakers = engine, session, h, index, speakers

    async def process(self, utterance: InboundUtterance, utterance_id: str) -> list[EventFrame]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.engine._pool, self._step, utterance, utterance_id)

    def _step(self, utterance: InboundUtterance, utterance_id: str) -> list[EventFrame]:
        t0 = time.perf_counter()
        e = self.engine
        slot = self.speakers.setdefault(utterance.speaker, len(self.speakers))
        x = _embed(utterance.text, e.dim)
        x[slot % e.dim] += 1.0
        self.h = np.tanh(e.w @ self.h + e.u @ x)
        logits = e.v @ self.h
        p = np.exp(logits - logits.max())
        p /= p.sum()
        while time.perf_counter() - t0 < e.work_s:
            pass
        t_start = utterance.t_start if utterance.t_start is not None else float(self.index)
        t_end = utterance.t_end if utterance.t_end is not None else t_start
        ev = emotion_event(session=self.session, utterance_id=utterance_id, speaker=utterance.speaker,
                           t_start=t_start, t_end=t_end, text=utterance.text, labels=TOY_LABELS,
                           probs=p.tolist(), modalities=["t"], index=self.index,
                           latency_ms=(time.perf_counter() - t0) * 1000, worker_id=e.worker_id)
        self.index += 1
        return [EventFrame(session_id=self.session, kind=EventKind.EMOTION, payload=ev)]

    async def snapshot(self) -> Snapshot:
        return Snapshot({"h": self.h.copy()}, {"engine": ToyEngine.name, "index": self.index,
                                                 "speakers": dict(self.speakers)})
