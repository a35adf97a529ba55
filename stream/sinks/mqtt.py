"""MQTT sink: events at QoS 1 to ``pcgnet/<session>/{emotion,shift,error}``, retained speaker state, and a
retained per-process ``pcgnet/$status/<client_id>`` online/offline record with a last will (the contract:
docs/asyncapi.yaml).

Topics and payloads come from :func:`stream.mqtt.wire.route`, the connection from
:func:`stream.mqtt.client.run_reconnecting`. While the broker is away, events wait in the sink's bounded
inbox (drop oldest beyond ``maxsize``, counted), or with ``spool_dir`` in the on-disk spool; the event
being published when the connection broke is retried first, so order is kept. Retained speaker state
expires after ``speaker_expiry_s`` (MQTT 5 message expiry) and is cleared when the run ends cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes

from ..channel import ChannelClosed
from ..events import utc_now_iso
from ..frames import EventKind
from ..mqtt import topics
from ..mqtt.backoff import Backoff
from ..mqtt.client import expiry_properties, install_loop_exception_handler, run_reconnecting
from ..mqtt.publisher import SpoolPublisher
from ..mqtt.settings import MqttSettings
from ..mqtt.spool import Spool, SpoolError
from ..mqtt.wire import Outbound, route, status_payload
from ..params import LiveParams
from .base import Sink, SinkFrame

log = logging.getLogger(__name__)

MAX_CLEARED_TOPICS = 100_000
"""Retained speaker topics remembered for clearing at the end of a run (beyond: they only expire)."""


class MqttSink(Sink):
    """Publishes events to a broker.

    Args:
        settings: broker URL, credentials and TLS (``MqttSettings.from_url``).
        root: topic root (``pcgnet``).
        qos: QoS of events (1: at least once; event ids let subscribers drop duplicates).
        worker_id: copied into status records.
        max_backoff_s: ceiling of the reconnect delay.
        spool_dir: when set, every event is first appended to an on-disk spool there
            (:class:`stream.mqtt.spool.Spool`) and removed after its PUBACK, so events survive a broker
            outage and a crash of this process (docs/reliability.md); ``None`` = in-memory inbox only.
        spool_max_bytes: size bound of the spool (drop-oldest beyond it, counted).
        speaker_expiry_s: MQTT 5 message expiry of the retained speaker state (0: never expires).
        status_interval_s: the retained "online" record is refreshed with health figures this often.
        offline_expiry_s: MQTT 5 message expiry of the retained "offline" record and the will (0: never), so
            dead processes' records go away.
    """

    name = "mqtt"

    def __init__(self, settings: MqttSettings, *, root: str = topics.DEFAULT_ROOT, qos: int = 1,
                 worker_id: str | None = None, max_backoff_s: float = 10.0, maxsize: int = 4096,
                 spool_dir: str | None = None, spool_max_bytes: int = 64 * 1024 * 1024,
                 speaker_expiry_s: int = LiveParams.speaker_expiry_s, status_interval_s: float = 10.0,
                 offline_expiry_s: int = 86400) -> None:
        super().__init__(maxsize=maxsize)
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self.publisher: SpoolPublisher | None = None  # while run() uses the spool
        # Health on the retained status record (overload is visible to subscribers): the runtime sets
        # status_provider to its queue depths.
        self.status_provider: Callable[[], Mapping[str, int]] | None = None
        self.status_info: Mapping[str, Any] = {}  # fixed for the run: the text encoder's dtype and the CPU
        self.status_interval_s = status_interval_s
        self.offline_expiry_s = offline_expiry_s
        cid = settings.client_id or f"pcgnet-live-{uuid.uuid4().hex[:8]}"
        self.settings = settings.with_client_id(cid)
        self.root = root
        self.qos = qos
        self.worker_id = worker_id
        self.max_backoff_s = max_backoff_s
        self.speaker_expiry_s = speaker_expiry_s
        self.connected = asyncio.Event()
        self.published = 0
        self.connect_failures = 0
        self._pending: Outbound | None = None
        self._retained: OrderedDict[str, None] = OrderedDict()  # speaker topics written in this run
        self._done = asyncio.Event()  # closed with nothing left to send: stop reconnecting
        self._connected_at = ""

    # -- wire ---------------------------------------------------------------------------------------

    def _route(self, frame: SinkFrame) -> Outbound:
        """Where a frame goes (and remembers retained topics, to clear them at the end)."""
        out = route(frame, root=self.root, worker_id=self.worker_id, speaker_expiry_s=self.speaker_expiry_s)
        if out.retain and getattr(frame, "kind", None) is EventKind.SPEAKER:  # a run's end record stays
            self._retained[out.topic] = None
            self._retained.move_to_end(out.topic)
            if len(self._retained) > MAX_CLEARED_TOPICS:
                self._retained.popitem(last=False)
        return out

    def _clears(self) -> list[Outbound]:
        """Empty retained messages deleting this run's speaker state (the run is over)."""
        return [Outbound(t, b"", retain=True) for t in self._retained]

    def _status(self, state: str, *, will: bool = False) -> bytes:
        return status_payload(state, self.settings.client_id or "", connected_at=self._connected_at,
                              worker_id=self.worker_id, health=None if will or state == "offline" else self.health(),
                              will=will, keepalive_s=self.settings.keepalive_s,
                              status_interval_s=self.status_interval_s)

    @property
    def status_topic(self) -> str:
        return topics.status_topic(self.settings.client_id or "", root=self.root)

    def _client(self) -> aiomqtt.Client:
        """A new connection whose last will says when it was made (the broker sends it after we are gone)."""
        self._connected_at = utc_now_iso()
        will = aiomqtt.Will(self.status_topic, self._status("offline", will=True), qos=1, retain=True,
                            properties=expiry_properties(self.offline_expiry_s, PacketTypes.WILLMESSAGE)
                            if self.offline_expiry_s else None)
        return aiomqtt.Client(**self.settings.client_kwargs(will=will))

    def _lost(self, _exc: Exception) -> None:
        self.connected.clear()
        self.connect_failures += 1

    def health(self) -> dict[str, Any]:
        """Queue depths, drops and spool state for the status record."""
        h: dict[str, Any] = {"queues": dict(self.status_provider()) if self.status_provider else {},
                             "mqtt_inbox": len(self.inbox), "mqtt_dropped": self.inbox.dropped, **self.status_info}
        if self.publisher is not None:
            h["spool"] = self.publisher.status()
        return h

    # -- delivery -----------------------------------------------------------------------------------

    def close(self) -> None:
        super().close()
        if self._pending is None and not len(self.inbox):
            self._done.set()

    async def run(self) -> None:
        install_loop_exception_handler()
        if self.spool_dir is not None:
            try:
                spool = Spool(self.spool_dir, max_bytes=self.spool_max_bytes)
            except SpoolError as e:
                log.error("MQTT spool unusable (%s); events are kept in memory only", e)
            else:
                await self._run_spooled(spool)
                return
        await run_reconnecting(self._client, self._serve, backoff=Backoff(max_s=self.max_backoff_s),
                               label=f"MQTT broker {self.settings.redacted_url()}", stop=self._done, on_lost=self._lost)

    async def _publish(self, client: aiomqtt.Client, out: Outbound) -> None:
        props = expiry_properties(out.expiry_s) if out.expiry_s else None
        await client.publish(out.topic, out.payload, qos=self.qos, retain=out.retain, properties=props)

    async def _online(self, client: aiomqtt.Client) -> asyncio.Task[None]:
        """Publishes "online" and starts its refresher (cancelled when the connection ends)."""
        self.connected.set()
        log.info("MQTT: connected to %s", self.settings.redacted_url())
        await client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        return asyncio.get_running_loop().create_task(self._heartbeat(client), name="mqtt.status")

    async def _offline(self, client: aiomqtt.Client) -> None:
        props = expiry_properties(self.offline_expiry_s) if self.offline_expiry_s else None
        await client.publish(self.status_topic, self._status("offline"), qos=1, retain=True, properties=props)

    async def _serve(self, client: aiomqtt.Client) -> None:
        beat = await self._online(client)
        try:
            while True:
                if self._pending is None:
                    try:
                        self._pending = self._route(await self.inbox.get())
                    except ChannelClosed:
                        break
                await self._publish(client, self._pending)
                self._pending = None
                self.published += 1
                self.delivered += 1
            for out in self._clears():
                await self._publish(client, out)
            self._retained.clear()
            await self._offline(client)
        finally:
            beat.cancel()

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        """Republish the retained "online" record with fresh health figures until the connection ends."""
        try:
            while True:
                await asyncio.sleep(self.status_interval_s)
                await client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        except aiomqtt.MqttError:
            return

    async def _run_spooled(self, spool: Spool) -> None:
        """Inbox -> on-disk spool -> broker, in order, acknowledged removal (stream.mqtt.spool)."""
        self.publisher = pub = SpoolPublisher(spool, backoff=Backoff(max_s=self.max_backoff_s),
                                              label=f"MQTT broker {self.settings.redacted_url()}")
        beats: list[asyncio.Task[None]] = []

        async def online(client: aiomqtt.Client) -> None:
            for b in beats:
                b.cancel()
            beats[:] = [await self._online(client)]

        def submit(out: Outbound) -> None:
            pub.submit(out.topic, out.payload, qos=self.qos, retain=out.retain, expiry_s=out.expiry_s)

        publishing = asyncio.ensure_future(pub.run(self._client, on_connect=online, on_close=self._offline))
        try:
            async for frame in self.inbox:
                submit(self._route(frame))
                self.delivered += 1  # handed to the spool: from here on it survives outages and crashes
            for out in self._clears():
                submit(out)
            pub.close()
            await publishing
        finally:
            for b in beats:
                b.cancel()
            if not publishing.done():
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)
            self.published = pub.delivered
            if len(spool):
                log.warning("MQTT: %d event(s) not yet delivered stay in the spool %s for the next run",
                            len(spool), self.spool_dir)
            spool.close()
