"""MQTT sink: events at QoS 1 to ``pcgnet/<session>/{emotion,shift,error}``, retained speaker state, and a
retained ``pcgnet/status`` online/offline record with a last will.

One ``aiomqtt.Client`` is built inside the running loop (aiomqtt 2 requires it) and used with
``async with``; aiomqtt 2 leaves reconnection to the application, so :meth:`MqttSink.run` wraps the
connection in a loop that retries with jittered exponential back-off on ``MqttError``. While the broker
is away, events wait in the sink's bounded inbox (drop oldest beyond ``maxsize``, counted); the event
being published when the connection broke is retried first, so order is kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import aiomqtt

from .. import topics
from ..channel import ChannelClosed
from ..events import SCHEMA_VERSION, utc_now_iso
from ..frames import ErrorFrame, EventKind
from ..mqtt_config import MqttSettings
from .base import Sink, SinkFrame
from .jsonl import dumps, frame_json

log = logging.getLogger(__name__)


def status_payload(state: str, client_id: str, worker_id: str | None, health: dict[str, Any] | None = None) -> bytes:
    d: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "type": "status", "state": state,
                         "client_id": client_id, "at": utc_now_iso()}
    if worker_id is not None:
        d["worker_id"] = worker_id
    if health:
        d.update(health)
    return json.dumps(d).encode()


class MqttSink(Sink):
    """Publishes events to a broker.

    Args:
        settings: broker URL, credentials and TLS (``MqttSettings.from_url``).
        root: topic root (``pcgnet``).
        qos: QoS of events (1: at least once; event ids let subscribers drop duplicates).
        worker_id: copied into status records.
        max_backoff_s: ceiling of the reconnect delay.
        spool_dir: when set, every event is first appended to an on-disk spool there
            (:class:`stream.spool.Spool`) and removed after its PUBACK, so events survive a broker outage
            and a crash of this process (docs/reliability.md); ``None`` = in-memory inbox only.
        spool_max_bytes: size bound of the spool (drop-oldest beyond it, counted).
    """

    name = "mqtt"

    def __init__(self, settings: MqttSettings, *, root: str = topics.DEFAULT_ROOT, qos: int = 1,
                 worker_id: str | None = None, max_backoff_s: float = 10.0, maxsize: int = 4096,
                 spool_dir: str | None = None, spool_max_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__(maxsize=maxsize)
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self.publisher: Any = None  # stream.spool.SpoolPublisher while run() uses the spool
        # Health on the retained status record, refreshed every status_interval_s (overload is visible to
        # subscribers): the runtime sets status_provider to its queue depths.
        self.status_provider: Callable[[], Mapping[str, int]] | None = None
        self.status_interval_s = 10.0
        cid = settings.client_id or f"pcgnet-live-{uuid.uuid4().hex[:8]}"
        self.settings = settings.with_client_id(cid)
        self.root = root
        self.qos = qos
        self.worker_id = worker_id
        self.max_backoff_s = max_backoff_s
        self.connected = asyncio.Event()
        self.published = 0
        self.connect_failures = 0
        self._pending: SinkFrame | None = None

    def topic_for(self, frame: SinkFrame) -> tuple[str, bool]:
        """(topic, retain) of a frame."""
        if isinstance(frame, ErrorFrame):
            return topics.error_topic(frame.session_id or "_", root=self.root), False
        if frame.kind is EventKind.EMOTION:
            return topics.emotion_topic(frame.session_id, root=self.root), False
        if frame.kind is EventKind.SHIFT:
            return topics.shift_topic(frame.session_id, root=self.root), False
        if frame.kind is EventKind.SPEAKER:
            return topics.speaker_topic(frame.session_id, frame.speaker or "_", root=self.root), True
        return topics.error_topic(frame.session_id or "_", root=self.root), False

    async def run(self) -> None:  # noqa: C901 - the reconnect loop reads best in one place
        status = topics.status_topic(root=self.root)
        will = aiomqtt.Will(status, status_payload("offline", self.settings.client_id or "", self.worker_id),
                            qos=1, retain=True)
        if self.spool_dir is not None:
            from ..spool import Spool, SpoolError

            try:
                spool = Spool(self.spool_dir, max_bytes=self.spool_max_bytes)
            except SpoolError as e:
                log.error("MQTT spool unusable (%s); events are kept in memory only", e)
            else:
                await self._run_spooled(status, will, spool)
                return
        attempt = 0
        while True:
            if self._pending is None and self.inbox.closed and not len(self.inbox):
                return
            try:
                async with aiomqtt.Client(**self.settings.client_kwargs(will=will)) as client:
                    if attempt:
                        log.warning("MQTT: reconnected to %s", self.settings.redacted_url())
                    else:
                        log.info("MQTT: connected to %s", self.settings.redacted_url())
                    attempt = 0
                    self.connected.set()
                    await client.publish(status, status_payload("online", self.settings.client_id or "",
                                                                self.worker_id, self.health()), qos=1, retain=True)
                    beat = asyncio.ensure_future(self._heartbeat(client, status))
                    try:
                        await self._publish_loop(client)
                    finally:
                        beat.cancel()
                    await client.publish(status, status_payload("offline", self.settings.client_id or "",
                                                                self.worker_id), qos=1, retain=True)
                    return
            except aiomqtt.MqttError as e:
                self.connected.clear()
                attempt += 1
                self.connect_failures += 1
                delay = random.uniform(0.5, 1.0) * min(self.max_backoff_s, 0.5 * 2 ** min(attempt, 8))
                msg = (f"MQTT broker {self.settings.redacted_url()} unavailable ({e}); retrying in {delay:.1f} s, "
                       f"{len(self.inbox) + (self._pending is not None)} event(s) waiting")
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(msg)
                else:
                    log.debug(msg)
                await asyncio.sleep(delay)

    def health(self) -> dict[str, Any]:
        """Queue depths, drops and spool state for the status record."""
        h: dict[str, Any] = {"queues": dict(self.status_provider()) if self.status_provider else {},
                             "mqtt_inbox": len(self.inbox), "mqtt_dropped": self.inbox.dropped}
        if self.publisher is not None:
            h["spool"] = self.publisher.status()
        return h

    async def _heartbeat(self, client: aiomqtt.Client, status: str) -> None:
        """Republish the retained "online" record with fresh health figures until the connection ends."""
        try:
            while True:
                await asyncio.sleep(self.status_interval_s)
                await client.publish(status, status_payload("online", self.settings.client_id or "", self.worker_id,
                                                            self.health()), qos=0, retain=True)
        except aiomqtt.MqttError:
            return

    async def _run_spooled(self, status: str, will: aiomqtt.Will, spool: Any) -> None:
        """Inbox -> on-disk spool -> broker, in order, acknowledged removal (stream.spool)."""
        from ..spool import Backoff, SpoolPublisher, install_loop_exception_handler

        install_loop_exception_handler()
        cid = self.settings.client_id or ""
        self.publisher = pub = SpoolPublisher(spool, backoff=Backoff(max_s=self.max_backoff_s),
                                              label=self.settings.redacted_url())

        beats: list[asyncio.Future[None]] = []

        async def online(client: aiomqtt.Client) -> None:
            self.connected.set()
            for b in beats:
                b.cancel()
            await client.publish(status, status_payload("online", cid, self.worker_id, self.health()), qos=1,
                                 retain=True)
            beats[:] = [asyncio.ensure_future(self._heartbeat(client, status))]

        async def offline(client: aiomqtt.Client) -> None:
            await client.publish(status, status_payload("offline", cid, self.worker_id), qos=1, retain=True)

        publishing = asyncio.ensure_future(pub.run(lambda: aiomqtt.Client(**self.settings.client_kwargs(will=will)),
                                                   on_connect=online, on_close=offline))
        try:
            async for frame in self.inbox:
                topic, retain = self.topic_for(frame)
                pub.submit(topic, dumps(frame_json(frame, self.worker_id)).encode(), qos=self.qos, retain=retain)
                self.delivered += 1  # handed to the spool: from here on it survives outages and crashes
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

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            if self._pending is None:
                try:
                    self._pending = await self.inbox.get()
                except ChannelClosed:
                    return
            frame = self._pending
            topic, retain = self.topic_for(frame)
            payload = dumps(frame_json(frame, self.worker_id)).encode()
            await client.publish(topic, payload, qos=self.qos, retain=retain)
            self._pending = None
            self.published += 1
            self.delivered += 1

    async def handle(self, frame: SinkFrame) -> None:  # pragma: no cover - run() is overridden
        raise NotImplementedError
