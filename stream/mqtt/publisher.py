"""Drains the on-disk :class:`~stream.mqtt.spool.Spool` into MQTT in order, acknowledged removal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt

from .backoff import Backoff
from .client import run_reconnecting
from .spool import Spool

__all__ = ["SpoolPublisher"]

logger = logging.getLogger(__name__)


class SpoolPublisher:
    """Drains a :class:`Spool` into MQTT in order, reconnecting with :class:`Backoff`.

    Producers call :meth:`submit` (synchronous, one disk append). :meth:`run` owns the connection
    (:func:`stream.mqtt.client.run_reconnecting`): it connects with ``client_factory()``, runs
    ``on_connect(client)`` (e.g. publish "online"), then publishes the spooled messages one at a time and
    acknowledges each after its PUBACK. Messages not yet acknowledged when the connection breaks stay in
    the spool and go out first after the reconnect.

    Args:
        spool: The spool to drain.
        publish_timeout_s: How long to wait for a PUBACK before treating the connection as broken.
        backoff: Reconnect policy.
        label: What is unavailable, for log lines, e.g. ``"MQTT broker " + settings.redacted_url()``.
    """

    def __init__(
        self,
        spool: Spool,
        *,
        publish_timeout_s: float = 3.0,
        backoff: Backoff | None = None,
        label: str = "MQTT broker",
    ) -> None:
        self.spool = spool
        self.publish_timeout_s = publish_timeout_s
        self.backoff = backoff or Backoff()
        self.label = label
        self.connected = False
        self.delivered = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.write_failures = 0
        self._wake = asyncio.Event()
        self._closing = False

    def submit(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
               expiry_s: int | None = None) -> int:
        """Stores a message for delivery and wakes the publisher; returns its sequence number.

        When the spool cannot be written (disk full, I/O error) the message is counted in
        ``write_failures`` and logged (first failure and every 100th), ``-1`` is returned, and the caller
        carries on: one full disk must not stop the analyzer.
        """
        try:
            seq = self.spool.append(topic, payload, qos=qos, retain=retain, expiry_s=expiry_s)
        except OSError as exc:
            self.write_failures += 1
            if self.write_failures == 1 or self.write_failures % 100 == 0:
                logger.error("spool %s: cannot store an event (%s); %d event(s) lost so far",
                             self.spool.directory, exc.strerror or exc, self.write_failures)
            return -1
        self._wake.set()
        return seq

    def status(self) -> dict[str, Any]:
        """JSON-able counters for the status topic / UI."""
        st = self.spool.stats()
        return {
            "connected": self.connected,
            "pending": st.pending,
            "spool_bytes": st.bytes_on_disk,
            "delivered": self.delivered,
            "dropped": st.dropped,
            "write_failures": self.write_failures,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }

    def close(self) -> None:
        """No more submissions: :meth:`drain` and :meth:`run` return once the spool is empty.

        Whatever is still pending when the caller gives up (cancels) stays on disk and is delivered
        first by the next process that opens the same spool directory.
        """
        self._closing = True
        self._wake.set()

    async def drain(self, client: aiomqtt.Client) -> None:
        """Publishes pending messages on one connected client.

        Returns when the spool is empty after :meth:`close`; otherwise runs until the connection breaks
        (``aiomqtt.MqttError``) or it is cancelled.
        """
        from .client import expiry_properties

        while True:
            batch = self.spool.peek(64)
            if not batch:
                if self._closing:
                    return
                self._wake.clear()
                if len(self.spool) == 0 and not self._closing:
                    await self._wake.wait()
                continue
            for msg in batch:
                props = expiry_properties(msg.expiry_s) if msg.expiry_s else None
                await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain, properties=props,
                                     timeout=self.publish_timeout_s)
                self.spool.ack(msg.seq)
                self.delivered += 1

    async def run(
        self,
        client_factory: Callable[[], aiomqtt.Client],
        *,
        on_connect: Callable[[aiomqtt.Client], Awaitable[None]] | None = None,
        on_close: Callable[[aiomqtt.Client], Awaitable[None]] | None = None,
    ) -> None:
        """Connects, drains and reconnects until cancelled, or until empty after :meth:`close`.

        Args:
            client_factory: Builds a fresh ``aiomqtt.Client`` per attempt.
            on_connect: Awaited after each connect (e.g. publish the retained "online" status).
            on_close: Awaited on the connection before a clean return (e.g. publish "offline").
        """

        had_connection = False

        async def serve(client: aiomqtt.Client) -> None:
            nonlocal had_connection
            self.connected = had_connection = True
            try:
                logger.info("mqtt: connected to %s (%d spooled message(s) to send)", self.label, len(self.spool))
                if on_connect is not None:
                    await on_connect(client)
                await self.drain(client)
                if on_close is not None:
                    await on_close(client)
            finally:
                self.connected = False

        def lost(exc: Exception) -> None:
            nonlocal had_connection
            self.reconnects += had_connection  # an established connection broke (not a failed attempt)
            had_connection = False
            self.last_error = str(exc)

        await run_reconnecting(client_factory, serve, backoff=self.backoff, label=self.label, on_lost=lost)
