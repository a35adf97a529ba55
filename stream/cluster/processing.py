"""How a worker steps the conversations it owns and hands their state over (the second half of
:class:`stream.cluster.worker.Worker`; the first half owns the connection and the conversations)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from paho.mqtt.properties import Properties

from stream.capture.base import default_utterance_id
from stream.cluster.inputs import LocalConversation
from stream.cluster.ownership import ClusterView
from stream.cluster.records import AckRecord
from stream.cluster.statecodec import StateBlob, StateError, encode_state
from stream.frames import ErrorCategory, ErrorFrame
from stream.mqtt.client import expiry_properties
from stream.mqtt.inbound import InboundError
from stream.mqtt.topics import ack_topic, state_topic
from stream.mqtt.wire import route
from stream.params import WorkerParams
from stream.sinks.base import SinkFrame

__all__ = ["Processing", "WorkerStats"]

log = logging.getLogger("stream.cluster.worker")


@dataclass
class WorkerStats:
    """Counters, logged at shutdown and useful in tests and benchmarks."""

    processed: int = 0
    claims: int = 0
    claims_lost: int = 0
    adopted: int = 0
    released: int = 0
    fenced: int = 0
    duplicates: int = 0
    gaps_skipped: int = 0
    rejected: int = 0


class Processing:
    """Stepping owned conversations (up to ``concurrency`` at once), publishing their events, state and acks.

    A mixin of :class:`~stream.cluster.worker.Worker`, which provides the attributes and the broker I/O
    declared here.
    """

    params: WorkerParams
    worker_id: str
    local: dict[str, LocalConversation]
    view: ClusterView
    stats: WorkerStats
    _ready: OrderedDict[str, None]
    _ready_event: asyncio.Event

    async def _publish(self, topic: str, payload: bytes | str, *, retain: bool = False, expiry: bool = True,
                       properties: Properties | None = None) -> None:
        raise NotImplementedError

    def _report(self, session: str | None, text: str) -> None:
        raise NotImplementedError

    async def _release(self, loc: LocalConversation) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        raise NotImplementedError

    def _mark_ready(self, session: str) -> None:
        self._ready[session] = None
        self._ready_event.set()

    async def _process_loop(self) -> None:
        """Steps up to ``concurrency`` conversations at once (the backend micro-batches across them)."""
        slots = asyncio.Semaphore(self.params.concurrency)
        while True:
            await self._ready_event.wait()
            if not self._ready:
                self._ready_event.clear()
                continue
            session, _ = self._ready.popitem(last=False)
            loc = self.local.get(session)
            if loc is None or not loc.owned or loc.busy:
                continue  # a busy conversation re-queues itself when its batch is done
            await slots.acquire()
            loc.busy = True
            self._spawn(self._process_one(loc, slots), f"cluster[{session}].step")

    async def _process_one(self, loc: LocalConversation, slots: asyncio.Semaphore) -> None:
        try:
            await self._process(loc)
        finally:
            loc.busy = False
            slots.release()
            if self.local.get(loc.session) is loc and loc.seq is not None and loc.seq.ready():
                self._mark_ready(loc.session)

    async def _process(self, loc: LocalConversation) -> None:
        assert loc.seq is not None and loc.conv is not None and loc.claim is not None
        s, p = loc.session, self.params
        items = loc.seq.ready()[: p.batch_max]
        for seq, key, item in items:
            events: list[SinkFrame]
            if isinstance(item.parsed, InboundError):
                events = [ErrorFrame(session_id=s, stage=f"cluster[{self.worker_id}].inbound",
                                     message=f"seq {seq}: {item.parsed.message}", category=ErrorCategory.INPUT)]
            else:
                try:  # the seq-th input (0-based) is the conversation's (seq + 1)-th, as numbered by live.py
                    events = list(await loc.conv.process(item.parsed, seq + 1))
                except Exception as exc:  # noqa: BLE001 - one failing step must not stop the conversation
                    uid = item.parsed.utterance_id or default_utterance_id(seq + 1)
                    events = [ErrorFrame(session_id=s, stage=f"cluster[{self.worker_id}].engine",
                                         message=f"utterance {uid}: {type(exc).__name__}: {exc}")]
            if self.local.get(s) is not loc or not self.view.holds(loc.claim):
                return  # fenced while stepping: the new owner repeats this step
            for ev in events:
                await self._publish_frame(ev)
            loc.seq.done(seq, key)
            self.stats.processed += 1
            loc.unsaved += 1
        if loc.unsaved >= p.state_every:
            await self._publish_state(loc)

    async def _publish_frame(self, frame: SinkFrame) -> None:
        """An event or error, routed exactly as ``live.py --mqtt`` routes it (:func:`stream.mqtt.wire.route`)."""
        out = route(frame, root=self.params.root, worker_id=self.worker_id,
                    speaker_expiry_s=self.params.speaker_expiry_s)
        await self._publish(out.topic, out.payload, retain=out.retain, expiry=False,
                            properties=expiry_properties(out.expiry_s) if out.expiry_s else None)

    async def _publish_state(self, loc: LocalConversation) -> None:
        assert loc.seq is not None and loc.conv is not None and loc.claim is not None
        s, p = loc.session, self.params
        snap = await loc.conv.snapshot()
        meta = loc.seq.to_meta()
        blob = StateBlob(s, loc.claim.epoch, self.worker_id, meta["next_seq"], meta["recent"], snap.meta,
                         snap.arrays)
        try:
            data = encode_state(blob, max_bytes=p.max_state_bytes)
        except StateError as exc:
            self._report(s, f"{exc}; not handed over (raise --max-state-bytes or shrink the window)")
            return
        if self.local.get(s) is not loc or not self.view.holds(loc.claim):
            return
        # Order matters: events (already out), then the state that includes them, then the ack.
        loc.unsaved = 0
        await self._publish(state_topic(s, root=p.root), data, retain=True)
        ack = AckRecord(s, blob.next_seq, loc.claim.epoch, self.worker_id, round(time.time(), 3))
        await self._publish(ack_topic(s, root=p.root), ack.encode(), retain=True)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for loc in list(self.local.values()):
                if not loc.owned or loc.seq is None or loc.busy:
                    continue
                skipped = loc.seq.skip_gap() if loc.seq.has_gap() else 0
                if skipped:
                    self.stats.gaps_skipped += skipped
                    self._report(loc.session, f"skipped {skipped} missing input(s) after "
                                              f"{self.params.gap_timeout_s:g} s (publisher did not re-send)")
                    self._mark_ready(loc.session)
                elif loc.unsaved and now - loc.last_input > self.params.state_flush_s:
                    loc.busy = True
                    try:
                        await self._publish_state(loc)
                    finally:
                        loc.busy = False
                    if self.local.get(loc.session) is loc and loc.seq.ready():
                        self._mark_ready(loc.session)
                elif not loc.seq.pending and now - loc.last_input > self.params.idle_release_s:
                    log.info("worker %s: releasing idle %r", self.worker_id, loc.session)
                    await self._release(loc)
                elif loc.seq.has_gap():
                    loc.seq.ready()  # starts the gap clock
