"""A headless analyzer worker: takes conversations from the broker, analyses them, hands them over.

One worker = one MQTT 5 connection + one backend (the model) + the conversations it owns. Many workers
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

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, Literal

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stream.cluster.backend import ConversationBackend, Snapshot
from stream.cluster.inputs import Input, LocalConversation, dedupe_key, seq_of
from stream.cluster.ownership import ClusterView
from stream.cluster.processing import Processing, WorkerStats
from stream.cluster.records import (
    AckRecord,
    OwnerRecord,
    RecordError,
    WorkerRecord,
    seq_properties,
)
from stream.cluster.sequencer import Sequencer
from stream.cluster.statecodec import StateBlob, StateError, decode_state
from stream.frames import ErrorFrame
from stream.mqtt.backoff import Backoff
from stream.mqtt.client import expiry_properties, payload_bytes, run_reconnecting
from stream.mqtt.inbound import ErrorRateLimiter, InboundError, InboundUtterance, parse_utterance
from stream.mqtt.settings import MqttSettings
from stream.mqtt.topics import (
    ack_topic,
    input_topic,
    owner_filter,
    owner_topic,
    session_from_topic,
    shared_input_filter,
    state_topic,
    sync_topic,
    worker_filter,
    worker_topic,
)
from stream.params import WorkerParams
from stream.tasks import OnError, Supervisor

__all__ = ["Worker"]

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 5.0  # lead: WorkerParams.cancel_timeout_s once params.py is open again


class Worker(Processing):
    """One cluster worker (see the module docstring for the protocol).

    Args:
        settings: Broker connection (``--mqtt``); the client id is set per connection.
        backend: What analyses conversations.
        params: Tunables.
    """

    def __init__(self, settings: MqttSettings, backend: ConversationBackend, params: WorkerParams) -> None:
        self.settings = settings
        self.backend = backend
        self.params = params
        self.worker_id = params.worker_id
        self.view = ClusterView()
        self.local: dict[str, LocalConversation] = {}
        self.stats = WorkerStats()
        self.incarnation = ""
        self._client: aiomqtt.Client | None = None
        self._ready: OrderedDict[str, None] = OrderedDict()
        self._ready_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self._barrier_ids = itertools.count()
        self._life = Supervisor(expected=(aiomqtt.MqttError,))  # claims, steps, stand-downs of this life
        self._errors = ErrorRateLimiter(rate_per_s=1.0, burst=5)
        self.connected = asyncio.Event()
        self.fatal: str | None = None  # set when the backend's background work failed (the worker stops)

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
        lifetime = Supervisor(on_fatal=self._backend_failed)
        lifetime.spawn(f"cluster[{self.worker_id}].backend", self.backend.run(), OnError.CANCEL)
        try:
            await run_reconnecting(self._connect, self._serve, backoff=backoff, stop=self._stop,
                                   label=f"worker {self.worker_id}: broker {self.settings.redacted_url()}",
                                   on_lost=lambda _e: self._drop_all())
        finally:
            await lifetime.cancel_all(CANCEL_TIMEOUT_S)
            log.info("worker %s stopped: %s", self.worker_id, self.stats)

    def _backend_failed(self, name: str, exc: BaseException) -> None:
        """Without its micro-batchers no step would ever finish: release everything and stop."""
        self.fatal = f"{name}: {type(exc).__name__}: {exc}"
        self.stop()

    def _record(self, status: Literal["online", "offline"]) -> bytes:
        return WorkerRecord(self.worker_id, self.incarnation, status, round(time.time(), 3), os.getpid()).encode()

    def _connect(self) -> aiomqtt.Client:
        """A new life: new incarnation, its own client id and an "offline" last will."""
        p = self.params
        self.incarnation = secrets.token_hex(6)
        will = aiomqtt.Will(worker_topic(self.worker_id, root=p.root), self._record("offline"), qos=1, retain=True,
                            properties=expiry_properties(p.record_expiry_s, PacketTypes.WILLMESSAGE))
        settings = self.settings.with_client_id(f"pcgnet-worker-{self.worker_id}-{self.incarnation}")
        client = aiomqtt.Client(**settings.client_kwargs(will=will, max_queued_incoming_messages=0))
        client.pending_calls_threshold = 64 * max(1, p.concurrency)  # concurrent steps publish at once
        return client

    async def _serve(self, client: aiomqtt.Client) -> None:
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
                await self._publish(worker_topic(self.worker_id, root=self.params.root), self._record("offline"),
                                    retain=True)
                dispatch.cancel()
                await self._life.cancel_all(CANCEL_TIMEOUT_S)
        finally:
            self.connected.clear()
            self._client = None
            for name in self._life.cancel_now():  # claims and stand-downs of this life die with it
                log.debug("worker %s: cancelled %s with its connection", self.worker_id, name)

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Goes online, learns the cluster (retained records), then starts taking inputs."""
        p = self.params
        await client.subscribe(sync_topic(self.worker_id, self.incarnation, root=p.root), qos=1)
        await client.subscribe(worker_filter(root=p.root), qos=1)
        await client.subscribe(owner_filter(root=p.root), qos=1)
        await self._publish(worker_topic(self.worker_id, root=p.root), self._record("online"), retain=True,
                            expiry=False)
        await self._barrier()  # every retained worker/owner record has arrived (broker order)
        await client.subscribe(shared_input_filter(p.group, root=p.root), qos=1)
        log.info("worker %s online (incarnation %s, %d live workers, %d known conversations)",
                 self.worker_id, self.incarnation, len(self.view.live_workers()), len(self.view.owners))
        for session in list(self.view.orphans()):
            self._maybe_adopt(session)

    # -- broker I/O helpers -------------------------------------------------------------------------

    async def _publish(self, topic: str, payload: bytes | str, *, retain: bool = False, expiry: bool = True,
                       properties: Properties | None = None) -> None:
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("not connected")
        if properties is None and retain and expiry:
            properties = expiry_properties(self.params.record_expiry_s)
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

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._life.spawn(name, coro)

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
        payload = payload_bytes(message)
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
            err = ErrorFrame(session_id=session, stage=f"cluster[{self.worker_id}]", message=text + extra)
            self._spawn(self._publish_frame(err), "cluster.error")

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
        item = Input(seq, payload, parsed)
        loc.last_input = time.monotonic()
        if not loc.owned:
            loc.inbox.append(item)
            return
        self._admit(loc, item)

    def _admit(self, loc: LocalConversation, item: Input) -> None:
        assert loc.seq is not None
        verdict = loc.seq.offer(item.seq, dedupe_key(item), item)
        if verdict == "duplicate":
            self.stats.duplicates += 1
        elif verdict == "overflow":
            self._report(loc.session, f"reorder buffer full ({loc.seq.max_pending}); input dropped until re-sent")
        else:
            self._mark_ready(loc.session)

    # -- claiming -----------------------------------------------------------------------------------

    def _start_claim(self, session: str) -> LocalConversation:
        loc = LocalConversation(session)
        self.local[session] = loc
        self.stats.claims += 1
        self._spawn(self._claim(loc), f"cluster[{session}].claim")
        return loc

    async def _claim(self, loc: LocalConversation) -> None:
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

    async def _restore(self, loc: LocalConversation, blob: StateBlob | None) -> None:
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
            conv = await self.backend.open(s, snapshot)
        except ValueError as exc:
            self._report(s, f"cannot resume from the retained state ({exc}); starting afresh")
            self.backend.close(s)
            conv = await self.backend.open(s, None)
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

    async def _stand_down(self, loc: LocalConversation) -> None:
        """Stops owning/claiming: drops the copy and forwards inputs not yet processed to the owner."""
        s, p = loc.session, self.params
        if self.local.get(s) is loc:
            del self.local[s]
        self._ready.pop(s, None)
        if loc.conv is not None:
            self.backend.close(s)
            loc.conv = None
        leftovers = list(loc.inbox) + (loc.seq.pending_items() if loc.seq is not None else [])
        loc.inbox, loc.owned = [], False
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client_unsubscribe(input_topic(s, root=p.root))
            await self._client_unsubscribe(state_topic(s, root=p.root))
        for item in leftovers:  # the owner de-duplicates; forwarding closes the claim-race window
            await self._publish(input_topic(s, root=p.root), item.payload, properties=seq_properties(item.seq))

    async def _release(self, loc: LocalConversation) -> None:
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
                self.backend.close(s)
        self.local.clear()
        self._ready.clear()
