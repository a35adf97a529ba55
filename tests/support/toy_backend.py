"""A deterministic stand-in for the model behind the cluster's backend seam (tests and benchmarks only).

Workers run it in process (``Worker(settings, ToyBackend(worker_id), params)``) or as processes
(``python -m tests.support.toy_worker``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stream.cluster.backend import Snapshot
from stream.events import emotion_event, new_run_id
from stream.frames import EventFrame, EventKind
from stream.mqtt.inbound import InboundUtterance
from stream.mqtt.wire import to_utterance

__all__ = ["TOY_LABELS", "ToyBackend", "ToyConversation"]

TOY_LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")


def _embed(text: str, dim: int) -> np.ndarray:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=dim).digest()
    return (np.frombuffer(digest, dtype=np.uint8).astype(np.float64) - 127.5) / 64.0


class ToyBackend:
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
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="toy-backend")
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
    def __init__(self, backend: ToyBackend, session: str, h: np.ndarray, index: int, speakers: dict[str, int],
                 prev_end: float, run_id: str) -> None:
        self.backend, self.session, self.h, self.index, self.speakers = backend, session, h, index, speakers
        self.prev_end, self.run_id = prev_end, run_id

    async def process(self, utterance: InboundUtterance, number: int) -> list[EventFrame]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.backend._pool, self._step, utterance, number)

    def _step(self, msg: InboundUtterance, number: int) -> list[EventFrame]:
        t0 = time.perf_counter()
        utterance = to_utterance(msg, number=number, prev_end_s=self.prev_end)
        e = self.backend
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
        return Snapshot({"h": self.h.copy()}, {"engine": ToyBackend.name, "index": self.index,
                                                 "speakers": dict(self.speakers), "prev_end": self.prev_end,
                                                 "run_id": self.run_id})
