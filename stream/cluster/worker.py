"""A cluster worker on NATS JetStream: pulls its partitions, steps their conversations, commits each step.

JetStream does the distributed part (:mod:`stream.cluster.jetstream`): inputs are a durable stream
partitioned by session; each partition's consumer is pinned to one puller at a time and refuses a
stale one; progress is a KV record written with compare-and-set. What is left here is the processing
loop (docs/deployment.md):

* **Partitions.** Member ``i`` of ``M`` pulls partitions ``p % M == i`` at once and, as a hot standby,
  all the others after ``standby_delay_s``; the server pins each partition to one of its pullers and
  gives it to a standby when the pinned one stops pulling for ``priority_timeout``. On gaining a
  partition the worker bumps the revision of every progress record of that partition (a *fence*), so a
  worker that was paused or cut off cannot commit a step it began before.
* **A step.** For each input (stream order per session; a gap, e.g. inputs delivered to a dead
  worker and not yet redelivered, is filled by reading the stream by subject): the model steps, then
  one compare-and-set writes the progress with this step's events, then the events go to the MQTT
  broker through :class:`~stream.sinks.mqtt.MqttSink` (the documented contract), then the input is
  acked. A refused write (:class:`~stream.cluster.progress.Fenced`) drops the conversation: nothing of
  that step is published.
* **State.** Every ``state_every`` steps the backend's snapshot goes to the state bucket before the
  progress that points to it. A worker that opens a conversation resumes from that blob, replays the
  inputs after it (no events: they are out) and re-publishes the last step's stored events (they may
  not have left the previous owner): events are at-least-once with identical content and ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from stream.cluster.backend import Conversation, ConversationBackend, Snapshot
from stream.cluster.jetstream import (
    Layout,
    PinLost,
    PinnedPuller,
    StoredInput,
    create_all,
    next_input,
    pinned,
    unpin,
)
from stream.cluster.progress import Fenced, Progress, ProgressStore, event_frame, event_record
from stream.cluster.statecodec import StateBlob, StateError
from stream.frames import ErrorCategory, ErrorFrame, EventFrame
from stream.mqtt.inbound import InboundError, parse_utterance
from stream.mqtt.topics import input_topic
from stream.params import WorkerParams
from stream.sinks.base import Sink, SinkFrame
from stream.tasks import OnError, Supervisor

__all__ = ["NodeStats", "Worker"]

log = logging.getLogger("stream.cluster.worker")


@dataclass
class NodeStats:
    """Counters (logged at exit; read by the tests and benchmarks)."""

    processed: int = 0
    replayed: int = 0
    duplicates: int = 0
    fenced: int = 0
    partitions_gained: int = 0
    partitions_lost: int = 0


@dataclass
class _Session:
    """A conversation this worker is stepping: its model copy, committed progress and queued inputs."""

    session: str
    partition: int
    subject: str
    conv: Conversation | None = None
    progress: Progress = field(default_factory=Progress)
    revision: int = 0
    queue: asyncio.Queue[tuple[Msg, int | None] | None] = field(default_factory=asyncio.Queue)  # None: stop
    last_delivered: int | None = None  # stream seq of the last first delivery seen for it in this tenure
    task: asyncio.Task[None] | None = None


async def _connection_error(exc: Exception) -> None:
    """One line per NATS connection error: the client reconnects by itself (nats-py's default logs a whole
    traceback for every reset while the server restarts)."""
    log.warning("nats connection: %s: %s", type(exc).__name__, exc)


class Worker:
    """One worker process's cluster loop (see the module docstring).

    Args:
        nats_url: The NATS server(s), ``nats://host:4222[,nats://...]``.
        layout: Stream, partitions and buckets (all workers and publishers agree on it).
        backend: What analyses conversations (the model).
        sink: Where events go (an :class:`~stream.sinks.mqtt.MqttSink` to the MQTT 5 broker); its
            ``delivered`` count tells when a step's events have left.
        params: Tunables.
    """

    def __init__(self, nats_url: str, layout: Layout, backend: ConversationBackend, sink: Sink,
                 params: WorkerParams) -> None:
        self.nats_url, self.layout, self.backend, self.sink, self.params = nats_url, layout, backend, sink, params
        self.worker_id = params.worker_id
        self.incarnation = f"{params.worker_id}#{secrets.token_hex(4)}"
        self.stats = NodeStats()
        self.sessions: dict[str, _Session] = {}
        self.held: dict[int, str | None] = {}  # partition -> our pin id
        self.ready = asyncio.Event()  # set once this worker pulls its own partitions
        self.fatal: str | None = None
        self._stop = asyncio.Event()
        self._offered = 0
        self._nc: NatsClient | None = None
        self._store: ProgressStore | None = None
        self._steps = Supervisor()

    def stop(self) -> None:
        """Ends :meth:`run`: pulling stops, steps in progress finish, held partitions are unpinned."""
        self._stop.set()

    async def run(self) -> None:
        nc = await nats.connect(self.nats_url, name=self.incarnation, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.5, error_cb=_connection_error)
        self._nc = nc
        life = Supervisor(on_fatal=self._failed)
        sink: asyncio.Task[None] | None = None
        try:
            await create_all(nc, self.layout)
            js = nc.jetstream()
            self._store = ProgressStore(await js.key_value(self.layout.progress_bucket),
                                        await js.key_value(self.layout.state_bucket),
                                        max_state_bytes=self.params.max_state_bytes)
            life.spawn(f"cluster[{self.worker_id}].backend", self.backend.run(), OnError.CANCEL)
            p = self.params
            own = [q for q in range(self.layout.partitions) if q % max(1, p.members) == p.member]
            for part in range(self.layout.partitions):
                if part in own or p.standby:
                    life.spawn(f"cluster[{self.worker_id}].p{part}",
                               self._pull(part, 0.0 if part in own else p.standby_delay_s), OnError.CANCEL)
            # The sink's "online" status record (<root>/$status/<client_id>, with worker_id) now means "pulling".
            sink = asyncio.get_running_loop().create_task(self.sink.run(), name=f"cluster[{self.worker_id}].sink")
            self.ready.set()
            log.info("worker %s: pulling partitions %s of %d (standby for the others: %s)", self.worker_id,
                     own, self.layout.partitions, p.standby)
            await self._stop.wait()
        finally:
            await life.cancel_all(5.0)  # pull loops first: no new input
            await self._finish_steps(10.0)
            await self._unpin_all(nc)
            self.sink.close()  # delivers what it holds, then returns
            if sink is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sink, 10.0)
            with contextlib.suppress(Exception):
                await nc.drain()
            log.info("worker %s stopped: %s", self.worker_id, self.stats)

    async def _finish_steps(self, timeout_s: float) -> None:
        """A graceful exit: each conversation finishes its step in progress; inputs still queued are
        handed back (NAK: redelivered to the next holder at once, not after the ack wait)."""
        tasks = []
        for loc in list(self.sessions.values()):
            while not loc.queue.empty():
                item = loc.queue.get_nowait()
                if item is not None:
                    with contextlib.suppress(Exception):
                        await item[0].nak()
            loc.queue.put_nowait(None)
            if loc.task is not None:
                tasks.append(loc.task)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        await self._steps.cancel_all(5.0)

    def _failed(self, name: str, exc: BaseException) -> None:
        self.fatal = f"{name}: {type(exc).__name__}: {exc}"
        self.stop()

    async def _unpin_all(self, nc: NatsClient) -> None:
        """A graceful exit hands its partitions over at once instead of after the priority timeout."""
        for part, pin in sorted(self.held.items()):
            with contextlib.suppress(Exception):
                if pin and await pinned(nc, self.layout, part) == pin:  # still ours (not after a server restart)
                    await unpin(nc, self.layout, part)
        self.held.clear()

    # -- partitions -----------------------------------------------------------------------------------

    async def _pull(self, part: int, delay_s: float) -> None:
        assert self._nc is not None
        if delay_s:  # a standby: wait until the partition's own member holds it (or it stays unheld)
            deadline = time.monotonic() + delay_s
            while time.monotonic() < deadline and not self._stop.is_set() and await pinned(self._nc, self.layout, part) is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.25)
        puller = PinnedPuller(self._nc, self.layout, part)
        expires = max(0.2, self.layout.priority_timeout_s / 2)
        while not self._stop.is_set():
            pin = None
            try:
                async for msg in puller.messages(self.params.batch, expires):
                    if puller.pin_id != pin:
                        pin = puller.pin_id
                        await self._gain(part, pin)
                    self._dispatch(part, msg)
            except PinLost as exc:
                log.warning("worker %s: %s; its conversations are another worker's now", self.worker_id, exc)
                self._lose(part)
            except (nats.errors.Error, OSError, TimeoutError) as exc:  # NATS away or slow: pull again
                log.warning("worker %s: partition %d: %s: %s; pulling again", self.worker_id, part,
                            type(exc).__name__, exc)
                self._lose(part)  # its conversations reopen from their committed progress
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)

    async def _gain(self, part: int, pin: str | None) -> None:
        """Fence: bump every progress record of the partition, so the previous holder's commits fail."""
        assert self._store is not None
        self._lose(part)  # anything left of an earlier tenure is stale
        self.held[part] = pin
        self.stats.partitions_gained += 1
        fenced = await self._store.fence(part)
        log.info("worker %s: holds partition %d (%d conversation(s) fenced)", self.worker_id, part, fenced)

    def _lose(self, part: int) -> None:
        if part in self.held:
            self.stats.partitions_lost += 1
        self.held.pop(part, None)
        for s in [s for s, loc in self.sessions.items() if loc.partition == part]:
            self._drop(self.sessions[s])

    def _drop(self, loc: _Session) -> None:
        if self.sessions.get(loc.session) is loc:
            del self.sessions[loc.session]
        if loc.task is not None and loc.task is not asyncio.current_task():
            loc.task.cancel()
        if loc.conv is not None:
            self.backend.close(loc.session)
            loc.conv = None

    def _dispatch(self, part: int, msg: Msg) -> None:
        stored = StoredInput(msg.metadata.sequence.stream, msg.subject, b"")
        try:
            session = stored.session
        except ValueError as exc:
            log.warning("worker %s: input on %s dropped: %s", self.worker_id, msg.subject, exc)
            self._spawn_ack(msg)
            return
        loc = self.sessions.get(session)
        if loc is None:
            loc = self.sessions[session] = _Session(session, part, msg.subject)
            loc.task = self._steps.spawn(f"cluster[{session}].steps", self._serve(loc), OnError.CONTINUE)
        first = msg.metadata.num_delivered == 1
        loc.queue.put_nowait((msg, loc.last_delivered if first else None))
        if first:
            loc.last_delivered = stored.seq

    def _spawn_ack(self, msg: Msg) -> None:
        self._steps.spawn("cluster.ack", msg.ack(), OnError.CONTINUE)

    # -- conversations --------------------------------------------------------------------------------

    async def _serve(self, loc: _Session) -> None:
        """One conversation's inputs, one at a time, until it is idle, fenced or its partition lost."""
        try:
            await self._open(loc)
            while True:
                try:
                    item = await asyncio.wait_for(loc.queue.get(), self.params.idle_release_s)
                except TimeoutError:
                    if loc.queue.empty():
                        log.info("worker %s: %r idle, released from memory", self.worker_id, loc.session)
                        self._drop(loc)
                        return
                    continue
                if item is None:  # shutdown: the step in progress is done
                    return
                await self._handle(loc, *item)
        except Fenced as exc:
            self.stats.fenced += 1
            log.warning("worker %s: %s: another worker owns it; dropped", self.worker_id, exc)
            self._drop(loc)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            # Nothing of the failed step was acked: the input comes back after the ack wait and the
            # conversation reopens from its committed progress.
            log.warning("worker %s: %r: %s: %s; dropped until its next input", self.worker_id, loc.session,
                        type(exc).__name__, exc)
            self._drop(loc)

    async def _open(self, loc: _Session) -> None:
        """Loads progress, resumes from the blob, replays the inputs after it, re-publishes the last events."""
        assert self._store is not None
        loc.progress, loc.revision = await self._store.load(loc.partition, loc.session)
        pr = loc.progress
        snapshot, steps, seq, recent = None, 0, 0, []
        if pr.blob:
            try:
                blob = await self._store.get_blob(loc.session, pr.blob)
                snapshot, steps, seq, recent = Snapshot(blob.arrays, blob.engine), blob.epoch, blob.next_seq - 1, blob.recent
            except (StateError, KeyNotFoundError) as exc:
                self._report(loc.session, f"state blob {pr.blob} unusable ({exc}); replaying from the start")
        try:
            loc.conv = await self.backend.open(loc.session, snapshot)
        except ValueError as exc:
            self._report(loc.session, f"cannot resume from the state blob ({exc}); replaying from the start")
            self.backend.close(loc.session)
            loc.conv, snapshot, steps, seq, recent = await self.backend.open(loc.session, None), None, 0, 0, []
        replay = Progress(last_seq=seq, steps=steps, recent=list(recent))
        while replay.last_seq < pr.last_seq:
            stored = await next_input(self._js(), self.layout, loc.subject, replay.last_seq + 1)
            if stored is None or stored.seq > pr.last_seq:
                break
            await self._apply(loc, stored, replay)
            replay.last_seq = stored.seq
            self.stats.replayed += 1
        if replay.steps != pr.steps:
            self._report(loc.session, f"replay reached step {replay.steps}, progress says {pr.steps} "
                                      "(inputs expired from the stream?)")
        if pr.events and pr.worker != self.incarnation:  # they may not have left the previous owner
            try:
                frames: list[SinkFrame] = [event_frame(loc.session, e) for e in pr.events]
            except (KeyError, TypeError, ValueError) as exc:
                self._report(loc.session, f"stored events of step {pr.steps} unusable ({exc!r}); not re-published")
            else:
                await self._emit(frames)

    def _js(self) -> Any:
        assert self._nc is not None
        return self._nc.jetstream()

    async def _handle(self, loc: _Session, msg: Msg, pred: int | None) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= loc.progress.last_seq:
            self.stats.duplicates += 1  # redelivered after it was committed
        elif pred is not None and pred <= loc.progress.last_seq:
            await self._step(loc, StoredInput(seq, msg.subject, bytes(msg.data)))  # in order: no read
        else:
            while loc.progress.last_seq < seq:  # a gap (takeover, redelivery): read the stream by subject
                stored = await next_input(self._js(), self.layout, loc.subject, loc.progress.last_seq + 1)
                if stored is None or stored.seq > seq:
                    stored = StoredInput(seq, msg.subject, bytes(msg.data))
                await self._step(loc, stored)
        await msg.ack()

    async def _apply(self, loc: _Session, stored: StoredInput, pr: Progress) -> list[SinkFrame]:
        """Steps the model by one input; updates ``pr`` (inputs numbered, recent ids); returns its frames.

        Numbering is live.py's: every input that is not a re-sent utterance id takes the next number
        (a rejected one too), so default utterance ids and event ids are those of a single process.
        """
        assert loc.conv is not None
        try:
            parsed = parse_utterance(input_topic(loc.session, root=self.layout.root), stored.data,
                                     root=self.layout.root)
        except InboundError as exc:
            pr.steps += 1  # a rejected input takes its place in the numbering, as in live.py
            return [ErrorFrame(session_id=loc.session, stage=f"cluster[{self.worker_id}].inbound",
                               message=f"input {stored.seq}: {exc.message}", category=ErrorCategory.INPUT)]
        if parsed.utterance_id and parsed.utterance_id in pr.recent:
            self.stats.duplicates += 1
            return []
        try:
            frames: list[SinkFrame] = list(await loc.conv.process(parsed, pr.steps + 1))
        except Exception as exc:  # noqa: BLE001 - one failing step must not stop the conversation
            frames = [ErrorFrame(session_id=loc.session, stage=f"cluster[{self.worker_id}].engine",
                                 message=f"utterance {parsed.utterance_id}: {type(exc).__name__}: {exc}")]
        pr.steps += 1
        if parsed.utterance_id:
            pr.remember(parsed.utterance_id)
        return frames

    async def _step(self, loc: _Session, stored: StoredInput) -> None:
        assert self._store is not None and loc.conv is not None
        old = loc.progress
        new = Progress(last_seq=stored.seq, steps=old.steps, recent=list(old.recent), blob=old.blob,
                       blob_steps=old.blob_steps, blob_seq=old.blob_seq, worker=self.incarnation)
        frames = await self._apply(loc, stored, new)
        new.events = [event_record(f) for f in frames if isinstance(f, EventFrame)]
        if new.steps - new.blob_steps >= self.params.state_every:
            await self._save_blob(loc, new)
        loc.revision = await self._store.commit(loc.partition, loc.session, new, loc.revision)
        loc.progress = new
        self.stats.processed += 1
        if old.blob and new.blob != old.blob:
            with contextlib.suppress(Exception):
                await self._store.drop_blob(old.blob)
        await self._emit(frames)

    async def _save_blob(self, loc: _Session, pr: Progress) -> None:
        assert self._store is not None and loc.conv is not None
        snap = await loc.conv.snapshot()
        blob = StateBlob(loc.session, pr.steps, self.worker_id, pr.last_seq + 1, list(pr.recent), snap.meta, snap.arrays)
        try:
            pr.blob = await self._store.put_blob(blob)
        except StateError as exc:
            self._report(loc.session, f"{exc}; the next owner replays further back")
            return
        pr.blob_steps, pr.blob_seq = pr.steps, pr.last_seq

    async def _emit(self, frames: list[SinkFrame]) -> None:
        """Hands frames to the sink and waits until it delivered them (at most one step outstanding)."""
        for f in frames:
            self.sink.offer(f)
            self._offered += 1
        # The sink counts deliveries but has no completion event to await; this edge polls its counter.
        deadline = time.monotonic() + 30.0
        while self.sink.delivered + self._dropped() < self._offered and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    def _dropped(self) -> int:
        return int(getattr(self.sink.inbox, "dropped", 0))

    def _report(self, session: str, text: str) -> None:
        log.warning("worker %s: %s: %s", self.worker_id, session, text)
        self.sink.offer(ErrorFrame(session_id=session, stage=f"cluster[{self.worker_id}]", message=text))
        self._offered += 1
