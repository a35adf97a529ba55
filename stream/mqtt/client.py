"""The one reconnecting MQTT client loop, used by the MQTT sink, the spool publisher, the MQTT input source,
the cluster worker and the feeder's users.

aiomqtt 2 leaves reconnection to the application. :func:`run_reconnecting` opens a fresh client per
attempt, hands it to a ``serve`` coroutine and, when the connection breaks (``aiomqtt.MqttError``, also
inside the exception group of a ``TaskGroup``), logs one line without credentials, waits for the
:class:`~stream.mqtt.backoff.Backoff` delay and tries again. It returns when ``serve`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .backoff import Backoff

__all__ = ["expiry_properties", "install_loop_exception_handler", "payload_bytes", "run_reconnecting"]

log = logging.getLogger(__name__)

_FD_CALLBACKS = frozenset({"add_writer", "add_reader", "remove_writer", "remove_reader"})


async def run_reconnecting(connect: Callable[[], aiomqtt.Client], serve: Callable[[aiomqtt.Client], Awaitable[None]],
                           *, backoff: Backoff, label: str, stop: asyncio.Event | None = None,
                           on_lost: Callable[[Exception], None] | None = None) -> None:
    """Connects with ``connect()`` and awaits ``serve(client)``, reconnecting until ``serve`` returns.

    Args:
        connect: Builds a fresh (not yet entered) ``aiomqtt.Client`` per attempt.
        serve: Uses one connection; returning ends the loop, ``aiomqtt.MqttError`` reconnects.
        backoff: Delay policy; reset on every successful connect.
        label: What is unavailable, for log lines, e.g. ``"MQTT broker " + settings.redacted_url()`` (never a
            password).
        stop: When set during a back-off wait, the loop returns instead of reconnecting.
        on_lost: Called with the error each time a connection attempt or a connection fails.
    """
    failures = 0
    while stop is None or not stop.is_set():
        try:
            async with connect() as client:
                if failures:
                    log.warning("%s: reconnected", label)
                failures = 0
                backoff.reset()
                await serve(client)
                return
        except* aiomqtt.MqttError as group:
            error: Exception = group.exceptions[0]
        failures += 1
        if on_lost is not None:
            on_lost(error)
        delay = backoff.next_delay()
        level = logging.WARNING if failures == 1 or failures % 10 == 0 else logging.DEBUG
        log.log(level, "%s unavailable (%s); retrying in %.1f s", label, error, delay)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


def payload_bytes(message: aiomqtt.Message) -> bytes:
    """A received message's payload as bytes (annotated ``bytes``, but paho hands over what it got)."""
    p: object = message.payload
    if isinstance(p, bytes | bytearray):
        return bytes(p)
    return b"" if p is None else str(p).encode("utf-8")


def expiry_properties(expiry_s: int, packet_type: int = PacketTypes.PUBLISH) -> Properties:
    """PUBLISH (or will) properties with an MQTT 5 message expiry: the broker forgets the (retained)
    message after ``expiry_s`` seconds."""
    props = Properties(packet_type)
    props.MessageExpiryInterval = int(expiry_s)
    return props


def install_loop_exception_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Turns exceptions escaping loop callbacks into one log line instead of a traceback wall.

    aiomqtt 2.5 registers its socket with ``loop.call_soon_threadsafe(loop.add_writer, fd, ...)``; when
    the broker dies, the socket can be closed before that callback runs, and ``add_writer`` raises
    ``OSError(EBADF)`` inside the loop (asyncio's default handler prints a full traceback, yet nothing
    is wrong: the client sees the disconnect and the reconnect loop takes over). This handler logs such
    socket races as one warning and passes everything else to the default handler.
    """
    loop = loop or asyncio.get_running_loop()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        callback = getattr(context.get("handle"), "_callback", None)
        name = getattr(callback, "__name__", "")
        if isinstance(exc, OSError | KeyError | ValueError) and name in _FD_CALLBACKS:
            log.warning("mqtt: socket closed while a callback was pending (%s: %s)", type(exc).__name__, exc)
            return
        if exc is not None and type(exc).__module__.startswith("aiomqtt") and "never retrieved" in str(
            context.get("message", "")
        ):
            # aiomqtt 2.5 leaves its "disconnected" future unobserved when a client is cancelled.
            log.debug("mqtt: unobserved disconnect of a closed client: %s", exc)
            return
        lp.default_exception_handler(context)

    loop.set_exception_handler(handler)
