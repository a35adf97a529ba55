"""Publishing utterances into a cluster so that none is lost across a worker crash.

An input published while its conversation's owner is dying can vanish: the broker hands it to the
dying worker (its own subscription, or its turn in the shared subscription) and the worker never
processes it. No broker feature closes that window for a clean-session subscriber, so the publisher
closes it, as end-to-end protocols do: it numbers inputs (MQTT 5 user property ``seq``), keeps each
until an ack record (``<root>/<s>/ack``, published by the owner after the state that includes it) says
``next_seq`` is past it, and re-sends what is still unacknowledged

* at once when an ack from a new epoch arrives (a new owner announced where it resumes),
* when a conversation made no progress for ``resend_after_s`` (nobody owns it: the re-sent input goes
  through the shared subscription and makes a live worker claim it), and
* after a reconnect (the connection is :func:`stream.mqtt.client.run_reconnecting`'s, like every MQTT
  client of the project): an input sent while the broker was away is kept and goes out then.

Workers drop duplicates by ``seq``, so re-sending is always safe. An ASR or agent that cannot do this
still works, but inputs published during a hand-off may be lost (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from stream.cluster.records import (
    AckRecord,
    RecordError,
    rendezvous_score,
    seq_properties,
)
from stream.mqtt.backoff import Backoff
from stream.mqtt.client import payload_bytes, run_reconnecting
from stream.mqtt.settings import MqttSettings
from stream.mqtt.topics import DEFAULT_ROOT, ack_filter, input_topic, session_from_topic

__all__ = ["Feeder", "FeederStats"]

log = logging.getLogger(__name__)


@dataclass
class FeederStats:
    sent: int = 0
    resent: int = 0
    acked: int = 0
    new_epochs: int = 0


@dataclass
class _Conv:
    next_seq: int = 0
    acked: int = 0  # highest next_seq acknowledged
    rank: tuple[int, int] = (0, 0)  # (epoch, rendezvous score) of the owner that sent the latest ack
    unacked: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    history: deque[tuple[int, bytes]] = field(default_factory=lambda: deque(maxlen=64))
    progress_at: float = field(default_factory=time.monotonic)
    sent_at: dict[int, float] = field(default_factory=dict)


class Feeder:
    """Publishes utterances with sequence numbers and re-sends them until acknowledged.

    Use as ``async with Feeder(settings) as feeder: await feeder.send(session, {...})``.

    Args:
        settings: Broker connection.
        root: Topic root.
        resend_after_s: Re-send a conversation's unacknowledged inputs after this long without progress.
        max_unacked: Bound of unacknowledged inputs over all conversations; ``send`` waits beyond it.
    """

    def __init__(self, settings: MqttSettings, *, root: str = DEFAULT_ROOT, resend_after_s: float = 2.0,
                 max_unacked: int = 10_000, client_id: str = "pcgnet-feeder", connect_timeout_s: float = 10.0,
                 ) -> None:
        self.settings = settings.with_client_id(client_id)
        self.root = root
        self.resend_after_s = resend_after_s
        self.max_unacked = max_unacked
        self.connect_timeout_s = connect_timeout_s
        self.stats = FeederStats()
        self.sent_at: dict[tuple[str, int], float] = {}  # first send time, for latency figures
        self._convs: dict[str, _Conv] = {}
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._progress = asyncio.Condition()

    async def __aenter__(self) -> Feeder:
        """Connects (waiting up to ``connect_timeout_s``); from then on reconnects by itself.

        Raises:
            aiomqtt.MqttError: no connection within ``connect_timeout_s``.
        """
        loop = asyncio.get_running_loop()
        connection = run_reconnecting(
            lambda: aiomqtt.Client(**self.settings.client_kwargs(max_queued_incoming_messages=0)), self._serve,
            backoff=Backoff(initial_s=0.2, max_s=5.0), label=f"feeder: MQTT broker {self.settings.redacted_url()}",
            on_lost=self._lost)
        self._tasks = [loop.create_task(connection, name="feeder.connection"),
                       loop.create_task(self._resender(), name="feeder.resend")]
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout_s)
        except TimeoutError:
            await self.__aexit__()
            raise aiomqtt.MqttError(f"feeder: no connection to {self.settings.redacted_url()} "
                                    f"within {self.connect_timeout_s:g} s") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _serve(self, client: aiomqtt.Client) -> None:
        """One connection: subscribe to the acks, re-send what is unacknowledged (it may have been lost
        with the previous connection; workers drop duplicates by seq), then handle acks."""
        await client.subscribe(ack_filter(root=self.root), qos=1)
        self._client = client
        self._connected.set()
        for session, conv in list(self._convs.items()):
            await self._resend(session, conv, "reconnected")
        await self._acks(client)

    @property
    def connected(self) -> bool:
        """Whether the feeder has a broker connection now (inputs sent without one wait for the re-send)."""
        return self._connected.is_set()

    def _lost(self, _exc: Exception) -> None:
        self._connected.clear()
        self._client = None

    # -- sending ------------------------------------------------------------------------------------

    def unacked(self) -> int:
        return sum(len(c.unacked) for c in self._convs.values())

    async def send(self, session: str, utterance: dict[str, Any]) -> int:
        """Publishes one utterance (the ``in/utterance`` JSON); returns its sequence number."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.unacked() < self.max_unacked)
        conv = self._convs.setdefault(session, _Conv())
        seq = conv.next_seq
        conv.next_seq += 1
        payload = json.dumps(utterance, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        conv.unacked[seq] = payload
        now = time.monotonic()
        conv.sent_at[seq] = now
        if len(conv.unacked) == 1:  # the only unacknowledged input: progress is measured from it
            conv.progress_at = now
        self.sent_at[(session, seq)] = time.time()
        await self._publish(session, seq, payload)
        self.stats.sent += 1
        return seq

    async def _publish(self, session: str, seq: int, payload: bytes) -> None:
        """Publishes when connected; an input the broker did not take stays unacknowledged and goes out
        again after the reconnect."""
        client = self._client
        if client is None:
            return
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(input_topic(session, root=self.root), payload, qos=1,
                                 properties=seq_properties(seq))

    async def _resend(self, session: str, conv: _Conv, reason: str) -> None:
        if not conv.unacked:
            return
        log.info("feeder: re-sending %d input(s) of %r (%s)", len(conv.unacked), session, reason)
        now = time.monotonic()
        for seq, payload in list(conv.unacked.items()):
            conv.sent_at[seq] = now
            await self._publish(session, seq, payload)
            self.stats.resent += 1
        conv.progress_at = now

    async def wait_acked(self, timeout_s: float) -> bool:
        """Waits until every input sent so far is acknowledged; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self._progress:
                    await self._progress.wait_for(lambda: self.unacked() == 0)
            return True
        except TimeoutError:
            return False

    # -- acks ---------------------------------------------------------------------------------------

    async def _acks(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            payload = payload_bytes(message)
            if not payload:
                continue
            try:
                session = session_from_topic(topic, "ack", root=self.root)
                rec = AckRecord.decode(payload, topic)
            except (ValueError, RecordError) as exc:
                log.warning("feeder: ignoring %s", exc)
                continue
            conv = self._convs.get(session)
            # Acks are ranked like owner records: a lower one comes from a deposed owner.
            rank = (rec.epoch, rendezvous_score(session, rec.worker))
            if conv is None or rank < conv.rank:
                continue
            handoff = rank > conv.rank and conv.rank[0] > 0  # not the first claim of a new conversation
            conv.rank = rank
            if handoff and rec.next_seq < conv.acked:
                # The new owner resumed from an older state than the last ack promised (it lost a claim
                # race): put the inputs it still needs back from the recent history.
                for seq, data in conv.history:
                    if seq >= rec.next_seq:
                        conv.unacked[seq] = data
                conv.unacked = OrderedDict(sorted(conv.unacked.items()))
                conv.acked = rec.next_seq
            for seq in [s for s in conv.unacked if s < rec.next_seq]:
                conv.history.append((seq, conv.unacked.pop(seq)))
                conv.sent_at.pop(seq, None)
                self.stats.acked += 1
            if rec.next_seq > conv.acked:
                conv.acked = rec.next_seq
                conv.progress_at = time.monotonic()
            async with self._progress:
                self._progress.notify_all()
            if handoff:
                self.stats.new_epochs += 1
                await self._resend(session, conv, f"new owner {rec.worker} at epoch {rec.epoch}")

    async def _resender(self) -> None:
        while True:
            await asyncio.sleep(min(0.2, self.resend_after_s / 4))
            now = time.monotonic()
            for session, conv in list(self._convs.items()):
                if not conv.unacked:
                    continue
                oldest = conv.sent_at.get(next(iter(conv.unacked)), now)
                if now - conv.progress_at > self.resend_after_s and now - oldest > self.resend_after_s:
                    await self._resend(session, conv, f"no progress for {self.resend_after_s:g} s")
