"""A headless analyzer worker: takes conversations from the broker, analyses them, hands them over.

One worker = one MQTT 5 connection + one engine (the model) + the conversations it owns. Many workers
share one broker; none of them talks to another directly. The protocol (docs/deployment.md):

* **Assignment.** Every worker subscribes ``$share/<group>/<root>/+/in/utterance``; the broker gives
  each input to exactly one of them. An input of a conversation nobody (alive) owns makes its receiver
  claim it (:mod:`stream.cluster.ownership`): subscribe to the conversation's own input topic, publish a
  retained owner record with the next epoch, wait a settle period, keep it if the claim still ranks
  highest. Inputs of conversations owned by a live worker are ignored by everybody else: the owner
  gets them through its own subscription.
* **Liveness.** A retained online record per worker life, with a retained "offline" last will. When a
  life ends, each survivor computes the same rendezvous-hash adopter for each orphaned conversation, and
  that adopter claims it at once (before the next input arrives).
* **State hand-off.** After each batch of steps the owner publishes the conversation's state blob
  (retained, :mod:`stream.cluster.statecodec`) and then an ack record ``next_seq``. A new owner
  subscribes to the state topic before claiming and resumes from the latest blob.
* **Exactly-once effect.** Inputs are admitted by a :class:`~stream.cluster.sequencer.Sequencer` (seq
  order, duplicates dropped); events are published before the state that includes them, and event ids
  are deterministic, so a step repeated after a crash repeats identical events with identical ids.
  Publishers keep inputs until acked and re-send those at or above an ack from a new epoch
  (:mod:`stream.cluster.feeder`), so inputs that were in flight to a dying owner are not lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stream.cluster.engine import Conversation, ConversationEngine, Snapshot
from stream.cluster.ownership import ClusterView
from stream.cluster.records import (
    SEQ_PROPERTY,
    AckRecord,
    OwnerRecord,
    RecordError,
    WorkerRecord,
    ack_topic,
    owner_filter,
    owner_topic,
    seq_properties,
    session_from_topic,
    shared_input_filter,
    state_topic,
    sync_topic,
    worker_filter,
    worker_topic,
)
from stream.cluster.sequencer import Sequencer
from stream.cluster.statecodec import DEFAULT_MAX_BYTES, StateBlob, StateError, decode_state, encode_state
from stream.events import error_event
from stream.frames import EventFrame, EventKind
from stream.inbound import ErrorRateLimiter, InboundError, InboundUtterance, parse_utterance
from stream.mqtt_config import MqttSettings
from stream.spool import Backoff, install_loop_exception_handler
from stream.topics import DEFAULT_ROOT, emotion_topic, error_topic, input_topic, shift_topic, speaker_topic

__all__ = ["Worker", "WorkerParams", "WorkerStats", "main", "seq_of"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class WorkerParams:
    """Tunables of one worker (units in the names).

    Args:
        worker_id: Stable name of this worker (appears in events as ``worker_id``).
        root: Topic root.
        group: Shared-subscription group; workers of one cluster use the same group.
        claim_settle_s: How long a claimant waits for competing claims before it owns a conversation.
            Must exceed the time a competing claim needs to reach every worker (one broker round trip
            plus the slowest worker's dispatch lag).
        gap_timeout_s: How long a missing input may hold back later ones (see Sequencer).
        idle_release_s: A conversation without input for this long is released (memory stays bounded;
            the state stays retained, so the conversation resumes where it was if it continues).
        max_conversations: Beyond this a worker claims nothing new (the publisher's re-send lands on
            another worker through the shared subscription).
        max_pending: Reorder-buffer bound per conversation.
        batch_max: Steps of one conversation processed before its state is published.
        concurrency: Conversations stepped at the same time (what the engine can micro-batch).
        state_every: Publish the state blob after this many steps (1 = after every step). Larger values
            divide the state traffic (a MELD-size text model's state is ~75 KB) at the price of a longer
            replay after a crash: the publisher re-sends the inputs since the last blob, and the new owner
            repeats those steps (identical events, identical ids).
        state_flush_s: A conversation with unsaved steps publishes its state after this long without input.
        max_state_bytes: Bound of a state blob.
        record_expiry_s: MQTT 5 message expiry of retained owner/state/ack records, so the broker forgets
            conversations that ended long ago.
        reconnect_max_s: Cap of the reconnect back-off.
    """

    worker_id: str
    root: str = DEFAULT_ROOT
    group: str = "pcgnet-workers"
    claim_settle_s: float = 0.15
    gap_timeout_s: float = 5.0
    idle_release_s: float = 600.0
    max_conversations: int = 2000
    max_pending: int = 256
    batch_max: int = 8
    concurrency: int = 32
    state_every: int = 1
    state_flush_s: float = 1.0
    max_state_bytes: int = DEFAULT_MAX_BYTES
    record_expiry_s: int = 86_400
    reconnect_max_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.worker_id or any(c in self.worker_id for c in "/+#\x00") or len(self.worker_id) > 64:
            raise ValueError(f"bad worker id {self.worker_id!r}: 1-64 characters, no '/', '+', '#'")
        if self.claim_settle_s < 0 or self.gap_timeout_s <= 0 or self.idle_release_s <= 0:
            raise ValueError("claim_settle_s >= 0, gap_timeout_s > 0 and idle_release_s > 0 are required")
        if self.state_every < 1 or self.concurrency < 1 or self.batch_max < 1:
            raise ValueError("state_every, concurrency and batch_max must be >= 1")


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


@dataclass
class _Input:
    """One input message as received: raw payload kept for forwarding, parsed form for the engine."""

    seq: int | None
    payload: bytes
    parsed: InboundUtterance | InboundError


@dataclass
class _Local:
    """A conversation this worker owns or is claiming."""

    session: str
    claim: OwnerRecord | None = None
    owned: bool = False
    inbox: list[_Input] = field(default_factory=list)  # inputs received while claiming
    seq: Sequencer[_Input] | None = None
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


def _dedupe_key(item: _Input) -> str:
    if item.seq is not None:
        return f"#{item.seq}"
    if isinstance(item.parsed, InboundUtterance) and item.parsed.utterance_id:
        return "id:" + item.parsed.utterance_id
    return "sha:" + hashlib.blake2b(item.payload, digest_size=12).hexdigest()


class Worker:
    """One cluster worker (see the module docstring for the protocol).

    Args:
        settings: Broker connection (``--mqtt``); the client id is set per connection.
        engine: What analyses conversations.
        params: Tunables.
    """

    def __init__(self, settings: MqttSettings, engine: ConversationEngine, params: WorkerParams) -> None:
        self.settings = settings
        self.engine = engine
        self.params = params
        self.worker_id = params.worker_id
        self.view = ClusterView()
        self.local: dict[str, _Local] = {}
        self.stats = WorkerStats()
        self.incarnation = ""
        self._client: aiomqtt.Client | None = None
        self._ready: OrderedDict[str, None] = OrderedDict()
        self._ready_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self._barrier_ids = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors = ErrorRateLimiter(rate_per_s=1.0, burst=5)
        self.connected = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the worker to release its conversations, go offline and return from :meth:`run`."""
        self._stop.set()

    async def run(self) -> None:
        """Serves until :meth:`stop`; reconnects with jittered back-off when the broker goes away.

        Every (re)connection is a new life (new incarnation): conversations of the previous life have
        been adopted by others by then, or are re-claimed by whoever gets their next input.
        """
        backoff = Backoff(initial_s=0.3, max_s=self.params.reconnect_max_s, multiplier=1.5)
        engine_task = asyncio.get_running_loop().create_task(self.engine.run(), name=f"cluster[{self.worker_id}].engine")
        try:
            while not self._stop.is_set():
                try:
                    await self._run_connection()
                    backoff.reset()
                except* aiomqtt.MqttError as group:
                    self._drop_all()
                    delay = backoff.next_delay()
                    log.warning("worker %s: broker unavailable or connection lost (%s); reconnecting in %.1f s",
                                self.worker_id, group.exceptions[0], delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), delay)
        finally:
            engine_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await engine_task
            log.info("worker %s stopped: %s", self.worker_id, self.stats)

    async def _run_connection(self) -> None:
        p = self.params
        self.incarnation = secrets.token_hex(6)
        offline = WorkerRecord(self.worker_id, self.incarnation, "offline", round(time.time(), 3), os.getpid())
        will = aiomqtt.Will(worker_topic(self.worker_id, root=p.root), offline.encode(), qos=1, retain=True,
                            properties=self._expiry(PacketTypes.WILLMESSAGE))
        settings = self.settings.with_client_id(f"pcgnet-worker-{self.worker_id}-{self.incarnation}")
        kwargs = settings.client_kwargs(will=will, max_queued_incoming_messages=0)
        async with aiomqtt.Client(**kwargs) as client:
            client.pending_calls_threshold = 64 * max(1, p.concurrency)  # concurrent steps publish at once
            self._client = client
            self.view = ClusterView()
            try:
                async with asyncio.TaskGroup() as tg:
                    dispatch = tg.create_task(self._dispatch(client), name=f"cluster[{self.worker_id}].dispatch")
                    await self._announce(client)
                    process = tg.create_task(self._process_loop(), name=f"cluster[{self.worker_id}].process")
                    house = tg.create_task(self._housekeeping(), name=f"cluster[{self.worker_id}].housekeeping")
                    self.connected.set()
                    await self._stop.wait()
                    self._stopping = True
                    for _ in range(200):  # let the step in progress finish and publish its state (<= 10 s)
                        if not any(loc.busy for loc in self.local.values()):
                            break
                        await asyncio.sleep(0.05)
                    process.cancel()
                    house.cancel()
                    await self._release_all()
                    offline = WorkerRecord(self.worker_id, self.incarnation, "offline", round(time.time(), 3),
                                           os.getpid())
                    await self._publish(worker_topic(self.worker_id, root=p.root), offline.encode(), retain=True)
                    for t in (dispatch, *self._tasks):
                        t.cancel()
            finally:
                self.connected.clear()
                self._client = None
                for t in list(self._tasks):  # claims and stand-downs of this life die with it
                    t.cancel()

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Goes online, learns the cluster (retained records), then starts taking inputs."""
        p = self.params
        await client.subscribe(sync_topic(self.worker_id, self.incarnation, root=p.root), qos=1)
        await client.subscribe(worker_filter(root=p.root), qos=1)
        await client.subscribe(owner_filter(root=p.root), qos=1)
        online = WorkerRecord(self.worker_id, self.incarnation, "online", round(time.time(), 3), os.getpid())
        await self._publish(worker_topic(self.worker_id, root=p.root), online.encode(), retain=True,
                            expiry=False)
        await self._barrier()  # every retained worker/owner record has arrived (broker order)
        await client.subscribe(shared_input_filter(p.group, root=p.root), qos=1)
        log.info("worker %s online (incarnation %s, %d live workers, %d known conversations)",
                 self.worker_id, self.incarnation, len(self.view.live_workers()), len(self.view.owners))
        for session in list(self.view.orphans()):
            self._maybe_adopt(session)

    # -- broker I/O helpers -------------------------------------------------------------------------

    def _expiry(self, packet_type: int) -> Properties:
        props = Properties(packet_type)
        props.MessageExpiryInterval = self.params.record_expiry_s
        return props

    async def _publish(self, topic: str, payload: bytes | str, *, retain: bool = False, expiry: bool = True,
                       properties: Properties | None = None) -> None:
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("not connected")
        if properties is None and retain and expiry:
            properties = self._expiry(PacketTypes.PUBLISH)
        await client.publish(topic, payload, qos=1, retain=retain, properties=properties)

    async def _barrier(self, timeout_s: float = 10.0) -> None:
        """Round trip through the broker: everything it queued for us before now has been dispatched.

        mosquitto delivers the retained messages of a SUBSCRIBE before it handles our next PUBLISH, so
        after the barrier the retained state of a conversation we just subscribed to (if any) is here.
        """
        token = f"{next(self._barrier_ids)}"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[token] = fut
        try:
            await self._publish(sync_topic(self.worker_id, self.incarnation, root=self.params.root), token)
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise aiomqtt.MqttError("barrier round trip timed out") from None
        finally:
            self._barriers.pop(token, None)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Any, name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except aiomqtt.MqttError as exc:
            log.warning("task %s: broker error: %s", name, exc)
        except Exception as exc:  # noqa: BLE001 - the boundary that reports task failures
            log.error("task %s failed: %s: %s", name, type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))

    # -- inbound ------------------------------------------------------------------------------------

    async def _dispatch(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                self._on_message(message)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
                self._report(None, f"dropped a message on {str(message.topic)[:120]!r}: "
                                   f"{type(exc).__name__}: {exc}")

    def _on_message(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        root = self.params.root
        if topic.startswith(f"{root}/$cluster/"):
            parts = topic.split("/")
            if parts[2] == "sync":
                fut = self._barriers.get(bytes(payload).decode(errors="replace"))
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif parts[2] == "workers" and payload:
                self._on_worker_record(WorkerRecord.decode(payload, topic))
            return
        if topic.endswith("/in/utterance"):
            self._on_input(topic, bytes(payload), message)
        elif topic.endswith("/owner"):
            if payload:
                self._on_owner_record(topic, OwnerRecord.decode(payload, topic))
        elif topic.endswith("/state"):
            self._on_state(topic, bytes(payload))

    def _report(self, session: str | None, text: str) -> None:
        """Rate-limited log line (and error event for a session): floods cannot flood the log."""
        admitted = self._errors.admit(session or "")
        if admitted is None:
            return
        extra = f" ({admitted.suppressed} similar suppressed)" if admitted.suppressed else ""
        log.warning("worker %s: %s%s", self.worker_id, text, extra)
        if session is not None and self._client is not None:
            ev = error_event(session=session, stage=f"cluster[{self.worker_id}]", category="input",
                             message=text + extra, worker_id=self.worker_id)
            self._spawn(self._publish(error_topic(session, root=self.params.root), _json(ev)), "cluster.error")

    def _on_worker_record(self, rec: WorkerRecord) -> None:
        ended = self.view.observe_worker(rec)
        if ended is None:
            return
        log.info("worker %s: worker %s (life %s) ended", self.worker_id, ended.worker, ended.incarnation)
        for session in list(self.view.orphans_of(ended)):
            self._maybe_adopt(session)

    def _maybe_adopt(self, session: str) -> None:
        """Eager adoption of an orphan: only the rendezvous winner among live workers claims it."""
        if self._stopping or session in self.local or len(self.local) >= self.params.max_conversations:
            return
        if self.view.claimable(session) and self.view.adopter(session) == self.worker_id:
            self.stats.adopted += 1
            self._start_claim(session)

    def _on_owner_record(self, topic: str, rec: OwnerRecord) -> None:
        if session_from_topic(topic, "owner", root=self.params.root) != rec.session:
            raise RecordError(f"owner record on {topic[:120]!r} names session {rec.session!r}")
        self.view.observe_owner(rec)
        loc = self.local.get(rec.session)
        if loc is not None and loc.owned and loc.claim is not None and not self.view.holds(loc.claim):
            self.stats.fenced += 1
            log.warning("worker %s: lost %r to %s (epoch %d); standing down", self.worker_id, rec.session,
                        rec.worker, rec.epoch)
            self._spawn(self._stand_down(loc), f"cluster[{rec.session}].stand-down")
        elif (loc is None and rec.status == "owned" and rec.worker != self.worker_id
              and not self.view.is_alive(rec.worker, rec.incarnation) and self.view.owner(rec.session) is rec):
            self._maybe_adopt(rec.session)  # a late record naming an already-dead life

    def _on_state(self, topic: str, payload: bytes) -> None:
        session = session_from_topic(topic, "state", root=self.params.root)
        loc = self.local.get(session)
        if loc is None or loc.owned or not payload:
            return
        try:
            blob = decode_state(payload, expect_session=session, max_bytes=self.params.max_state_bytes)
        except StateError as exc:
            loc.state_error = str(exc)
            return
        best = loc.best_state
        if best is None or (blob.epoch, blob.next_seq) >= (best.epoch, best.next_seq):
            loc.best_state = blob

    def _on_input(self, topic: str, payload: bytes, message: aiomqtt.Message) -> None:
        try:
            session = session_from_topic(topic, "in/utterance", root=self.params.root)
        except ValueError as exc:
            self._report(None, str(exc))
            return
        loc = self.local.get(session)
        if loc is None:
            if self._stopping or not self.view.claimable(session):
                return  # owned by a live worker: it has its own subscription
            if len(self.local) >= self.params.max_conversations:
                return  # full: the publisher re-sends, and the shared subscription picks another worker
            loc = self._start_claim(session)
        try:
            seq = seq_of(message)
        except ValueError as exc:  # no usable seq: cannot be ordered, so it is refused (owner/claimant only)
            self._report(session, f"rejected input: {exc}")
            self.stats.rejected += 1
            return
        try:
            parsed: InboundUtterance | InboundError = parse_utterance(topic, payload, root=self.params.root)
        except InboundError as exc:
            parsed = exc
        item = _Input(seq, payload, parsed)
        loc.last_input = time.monotonic()
        if not loc.owned:
            loc.inbox.append(item)
            return
        self._admit(loc, item)

    def _admit(self, loc: _Local, item: _Input) -> None:
        assert loc.seq is not None
        verdict = loc.seq.offer(item.seq, _dedupe_key(item), item)
        if verdict == "duplicate":
            self.stats.duplicates += 1
        elif verdict == "overflow":
            self._report(loc.session, f"reorder buffer full ({loc.seq.max_pending}); input dropped until re-sent")
        else:
            self._mark_ready(loc.session)

    def _mark_ready(self, session: str) -> None:
        self._ready[session] = None
        self._ready_event.set()

    # -- claiming -----------------------------------------------------------------------------------

    def _start_claim(self, session: str) -> _Local:
        loc = _Local(session)
        self.local[session] = loc
        self.stats.claims += 1
        self._spawn(self._claim(loc), f"cluster[{session}].claim")
        return loc

    async def _claim(self, loc: _Local) -> None:
        p, s = self.params, loc.session
        try:
            await self._client_subscribe(input_topic(s, root=p.root))
            await self._client_subscribe(state_topic(s, root=p.root))
            claim = OwnerRecord.claim(s, self.worker_id, self.incarnation, self.view.next_epoch(s))
            loc.claim = claim
            self.view.observe_owner(claim)
            await self._publish(owner_topic(s, root=p.root), claim.encode(), retain=True)
            await self._barrier()
            if p.claim_settle_s:
                await asyncio.sleep(p.claim_settle_s)
            blob = loc.best_state
            if not self.view.holds(claim) or (blob is not None and blob.epoch > claim.epoch):
                self.stats.claims_lost += 1
                log.info("worker %s: claim of %r (epoch %d) lost to %s", self.worker_id, s, claim.epoch,
                         getattr(self.view.owner(s), "worker", "?"))
                await self._stand_down(loc)
                return
            # Re-publish: the retained record is now ours even if a losing claim was stored after ours.
            await self._publish(owner_topic(s, root=p.root), claim.encode(), retain=True)
            await self._client_unsubscribe(state_topic(s, root=p.root))
            await self._restore(loc, blob)
        except asyncio.CancelledError:
            raise
        except aiomqtt.MqttError:
            raise
        except Exception:
            if self.local.get(s) is loc:
                del self.local[s]
            raise

    async def _restore(self, loc: _Local, blob: StateBlob | None) -> None:
        s = loc.session
        p = self.params
        assert loc.claim is not None
        snapshot = None if blob is None else Snapshot(blob.arrays, blob.engine)
        if loc.state_error is not None and blob is None:
            self._report(s, f"{loc.state_error}; starting the conversation afresh")
        elif blob is None and loc.claim.epoch > 1:
            log.warning("worker %s: %r had an owner before but no retained state (none published yet, or "
                        "expired); starting afresh", self.worker_id, s)
        try:
            conv = await self.engine.open(s, snapshot)
        except ValueError as exc:
            self._report(s, f"cannot resume from the retained state ({exc}); starting afresh")
            self.engine.close(s)
            conv = await self.engine.open(s, None)
            blob = None
        loc.conv = conv
        loc.seq = Sequencer(blob.next_seq if blob else 0, blob.recent if blob else (), max_pending=p.max_pending,
                            gap_timeout_s=p.gap_timeout_s)
        loc.owned = True
        loc.best_state = None
        log.info("worker %s: owns %r (epoch %d, resumes at seq %d%s)", self.worker_id, s, loc.claim.epoch,
                 loc.seq.next_seq, f", from {blob.worker}'s state" if blob else "")
        inbox, loc.inbox = loc.inbox, []
        for item in inbox:
            self._admit(loc, item)
        ack = AckRecord(s, loc.seq.next_seq, loc.claim.epoch, self.worker_id, round(time.time(), 3))
        await self._publish(ack_topic(s, root=p.root), ack.encode(), retain=True)

    async def _client_subscribe(self, topic: str) -> None:
        if self._client is None:
            raise aiomqtt.MqttError("not connected")
        await self._client.subscribe(topic, qos=1)

    async def _client_unsubscribe(self, topic: str) -> None:
        if self._client is not None:
            await self._client.unsubscribe(topic)

    async def _stand_down(self, loc: _Local) -> None:
        """Stops owning/claiming: drops the copy and forwards inputs not yet processed to the owner."""
        s, p = loc.session, self.params
        if self.local.get(s) is loc:
            del self.local[s]
        self._ready.pop(s, None)
        if loc.conv is not None:
            self.engine.close(s)
            loc.conv = None
        leftovers = list(loc.inbox) + (loc.seq.pending_items() if loc.seq is not None else [])
        loc.inbox, loc.owned = [], False
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client_unsubscribe(input_topic(s, root=p.root))
            await self._client_unsubscribe(state_topic(s, root=p.root))
        for item in leftovers:  # the owner de-duplicates; forwarding closes the claim-race window
            await self._publish(input_topic(s, root=p.root), item.payload, properties=seq_properties(item.seq))

    async def _release(self, loc: _Local) -> None:
        """Gives a conversation up cleanly (idle, or shutdown): bumps the epoch with status released."""
        s = loc.session
        if loc.owned and loc.unsaved:
            await self._publish_state(loc)
        if self.local.get(s) is loc:
            del self.local[s]  # before our own record comes back, so it is not taken for a rival's
        if loc.claim is not None and self.view.holds(loc.claim):
            rec = OwnerRecord(s, self.worker_id, self.incarnation, loc.claim.epoch + 1, "released",
                              round(time.time(), 3))
            self.view.observe_owner(rec)
            await self._publish(owner_topic(s, root=self.params.root), rec.encode(), retain=True)
        self.stats.released += 1
        await self._stand_down(loc)

    async def _release_all(self) -> None:
        for loc in list(self.local.values()):
            with contextlib.suppress(aiomqtt.MqttError):
                await self._release(loc)

    def _drop_all(self) -> None:
        """The connection is gone: this life's conversations are the others' to adopt now."""
        for s, loc in self.local.items():
            if loc.conv is not None:
                self.engine.close(s)
        self.local.clear()
        self._ready.clear()

    # -- processing ---------------------------------------------------------------------------------

    async def _process_loop(self) -> None:
        """Steps up to ``concurrency`` conversations at once (the engine micro-batches across them)."""
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

    async def _process_one(self, loc: _Local, slots: asyncio.Semaphore) -> None:
        try:
            await self._process(loc)
        finally:
            loc.busy = False
            slots.release()
            if self.local.get(loc.session) is loc and loc.seq is not None and loc.seq.ready():
                self._mark_ready(loc.session)

    async def _process(self, loc: _Local) -> None:
        assert loc.seq is not None and loc.conv is not None and loc.claim is not None
        s, p = loc.session, self.params
        items = loc.seq.ready()[: p.batch_max]
        for seq, key, item in items:
            if isinstance(item.parsed, InboundError):
                events = [EventFrame(session_id=s, kind=EventKind.ERROR, payload=error_event(
                    session=s, stage=f"cluster[{self.worker_id}].inbound", category="input",
                    message=f"seq {seq}: {item.parsed.message}", worker_id=self.worker_id))]
            else:
                uid = item.parsed.utterance_id or f"u{seq + 1:04d}"
                try:
                    events = await loc.conv.process(item.parsed, uid)
                except Exception as exc:  # noqa: BLE001 - one failing step must not stop the conversation
                    events = [EventFrame(session_id=s, kind=EventKind.ERROR, payload=error_event(
                        session=s, stage=f"cluster[{self.worker_id}].engine", category="input",
                        message=f"utterance {uid}: {type(exc).__name__}: {exc}", worker_id=self.worker_id))]
            if self.local.get(s) is not loc or not self.view.holds(loc.claim):
                return  # fenced while stepping: the new owner repeats this step
            for ev in events:
                await self._publish_event(s, ev)
            loc.seq.done(seq, key)
            self.stats.processed += 1
            loc.unsaved += 1
        if loc.unsaved >= p.state_every:
            await self._publish_state(loc)

    async def _publish_event(self, session: str, ev: EventFrame) -> None:
        root = self.params.root
        if ev.kind is EventKind.EMOTION:
            await self._publish(emotion_topic(session, root=root), _json(ev.payload))
        elif ev.kind is EventKind.SHIFT:
            await self._publish(shift_topic(session, root=root), _json(ev.payload))
        elif ev.kind is EventKind.SPEAKER and ev.speaker is not None:
            await self._publish(speaker_topic(session, ev.speaker, root=root), _json(ev.payload), retain=True)
        else:
            await self._publish(error_topic(session, root=root), _json(ev.payload))

    async def _publish_state(self, loc: _Local) -> None:
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


def _json(obj: Any) -> bytes:
    import json

    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- command line ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="live.py --worker",
        description="Headless analyzer worker: takes conversations from an MQTT 5 broker (no local sources). "
                    "Start any number of them against one broker; see docs/deployment.md.",
        epilog="example: python live.py --worker --worker-id w1 --mqtt mqtt://127.0.0.1:1883 "
               "--checkpoint checkpoints/meld-text",
    )
    ap.add_argument("--worker-id", default=None,
                    help="stable name of this worker, shown in events (default: <hostname>-<pid>)")
    ap.add_argument("--mqtt", default="mqtt://127.0.0.1:1883",
                    help="broker URL mqtt://[user:pass@]host:port or mqtts://...; credentials may come from "
                         "PCGNET_MQTT_USERNAME / PCGNET_MQTT_PASSWORD")
    ap.add_argument("--mqtt-ca", metavar="FILE", default=None, help="CA bundle of the broker certificate (mqtts://)")
    ap.add_argument("--mqtt-cert", metavar="FILE", default=None, help="client certificate for mutual TLS (mqtts://)")
    ap.add_argument("--mqtt-key", metavar="FILE", default=None, help="private key of --mqtt-cert")
    ap.add_argument("--checkpoint", default="checkpoints/default",
                    help="causal PCGNet checkpoint directory (default: checkpoints/default)")
    ap.add_argument("--engine", choices=("pcgnet", "toy"), default="pcgnet",
                    help="pcgnet (default; needs --checkpoint) or toy (a tiny deterministic stand-in for tests)")
    ap.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda)")
    ap.add_argument("--group", default="pcgnet-workers", help="shared-subscription group of the cluster")
    ap.add_argument("--root", default=DEFAULT_ROOT, help="topic root")
    ap.add_argument("--claim-settle-s", type=float, default=0.15, help="wait for competing claims (s)")
    ap.add_argument("--gap-timeout-s", type=float, default=5.0, help="skip a missing input after this (s)")
    ap.add_argument("--idle-release-s", type=float, default=600.0, help="release a quiet conversation (s)")
    ap.add_argument("--max-conversations", type=int, default=2000, help="claim nothing beyond this")
    ap.add_argument("--state-every", type=int, default=1,
                    help="publish a conversation's state blob every N steps (state traffic / N; longer replay)")
    ap.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    return ap


def make_engine(args: argparse.Namespace, worker_id: str) -> ConversationEngine:
    """The engine named on the command line (imports torch only for the real model)."""
    if args.engine == "toy":
        from stream.cluster.engine import ToyEngine

        return ToyEngine(worker_id)
    if not Path(args.checkpoint).exists():
        raise ValueError(f"checkpoint {args.checkpoint} not found; pass --checkpoint PATH (a causal model)")
    from stream.cluster.pcgnet_engine import PCGNetEngine

    return PCGNetEngine.from_checkpoint(args.checkpoint, worker_id=worker_id, device=args.device)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``live.py --worker`` and ``python -m stream.cluster``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    try:
        settings = MqttSettings.from_url(args.mqtt, ca_file=args.mqtt_ca, cert_file=args.mqtt_cert,
                                         key_file=args.mqtt_key)
        params = WorkerParams(worker_id=worker_id, root=args.root, group=args.group,
                              claim_settle_s=args.claim_settle_s, gap_timeout_s=args.gap_timeout_s,
                              idle_release_s=args.idle_release_s, max_conversations=args.max_conversations,
                              state_every=args.state_every)
        engine = make_engine(args, worker_id)
    except (ValueError, OSError) as exc:
        print(f"live.py --worker: {exc}", file=sys.stderr)
        return 2
    log.info("worker %s: broker %s, engine %s", worker_id, settings.redacted_url(), engine.name)

    async def serve() -> None:
        install_loop_exception_handler()  # aiomqtt socket races on broker loss: one line, not a traceback
        worker = Worker(settings, engine, params)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
