"""Connection limits of the dashboard's server, below aiohttp: how many sockets it holds, per client and
in all, and what happens when a client opens more or the process runs out of file descriptors.

aiohttp has an idle timeout (``keepalive_timeout``, which also bounds the wait for a first request) but
no cap on connections, so half-sent requests or silent sockets could hold every file descriptor, after
which asyncio's accept loop logs a traceback per failed ``accept()`` (thousands a second). Here every
accepted socket passes :class:`ConnectionGate` first: within ``limit`` (the configured cap, never more
than half the descriptors the process has left) and ``per_client`` per peer address. A socket over
either cap makes room by closing that scope's oldest *idle* connection (no request being handled: a
slow or silent client, or a finished keep-alive one); when every one of them is busy, the new socket is
closed instead. So a flood of slow clients can delay a page by one reconnect, never lock it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import sys
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..mqtt.inbound import ErrorRateLimiter

log = logging.getLogger(__name__)

ACCEPT_FAILED = "socket.accept() out of system resource"
"""The message asyncio's selector loop reports (through the loop's exception handler) for EMFILE & co."""


def fd_budget(cap: int, floor: int = 16) -> int:
    """``cap``, or half the file descriptors this process may still open when that is fewer."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return cap
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # no procfs: assume a modest number in use
        in_use = 64
    return max(floor, min(cap, (soft - in_use) // 2))


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


@dataclass(eq=False)
class _Conn:
    transport: asyncio.BaseTransport
    peer: str
    busy: int = 0
    """Requests of this connection being handled now (an open event stream counts for its lifetime)."""


@dataclass
class ConnectionGate:
    """Admits, counts and evicts the server's connections (event loop only).

    Args:
        limit: connections open at once.
        per_client: connections open at once from one peer address.
    """

    limit: int
    per_client: int
    _conns: OrderedDict[asyncio.BaseTransport, _Conn] = field(default_factory=OrderedDict)
    _per_peer: dict[str, int] = field(default_factory=dict)
    evicted: int = 0
    refused: int = 0
    _limiter: ErrorRateLimiter = field(default_factory=lambda: ErrorRateLimiter(rate_per_s=0.1, burst=2))

    @property
    def open(self) -> int:
        return len(self._conns)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Register a new socket, making room first; False: the caller closes it (everything is busy)."""
        peer = _peer(transport)
        if self._per_peer.get(peer, 0) >= self.per_client and not self._evict_idle(peer):
            return self._refuse(peer, f"{self.per_client} connections from {peer}")
        if len(self._conns) >= self.limit and not self._evict_idle(None):
            return self._refuse(peer, f"{self.limit} connections in all")
        self._conns[transport] = _Conn(transport, peer)
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        conn = self._conns.pop(transport, None)
        if conn is not None:
            left = self._per_peer.get(conn.peer, 1) - 1
            if left > 0:
                self._per_peer[conn.peer] = left
            else:
                self._per_peer.pop(conn.peer, None)

    @contextlib.contextmanager
    def busy(self, transport: asyncio.BaseTransport | None) -> Iterator[None]:
        """Marks the connection as handling a request (not evictable) for the ``with`` body."""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is not None:
            conn.busy += 1
        try:
            yield
        finally:
            if conn is not None:
                conn.busy -= 1

    def _evict_idle(self, peer: str | None) -> bool:
        """Close the oldest idle connection (of ``peer``, or of anyone); False when there is none."""
        for transport, conn in self._conns.items():
            if conn.busy == 0 and (peer is None or conn.peer == peer):
                self.release(transport)
                transport.abort()  # type: ignore[attr-defined]
                self.evicted += 1
                return True
        return False

    def _refuse(self, peer: str, why: str) -> bool:
        self.refused += 1
        if (adm := self._limiter.admit("refused")) is not None:
            more = f" ({adm.suppressed} more since the last report)" if adm.suppressed else ""
            log.warning("dashboard: refused a connection from %s: %s, all busy%s", peer, why, more)
        return False


class _GatedProtocol(asyncio.Protocol):
    """aiohttp's request handler behind the gate: told of its connection only once admitted."""

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit(transport):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._transport = transport
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._gate.release(self._transport)
            self._transport = None
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GatedSite(web.BaseSite):
    """A TCP site whose every accepted socket passes the gate first."""

    __slots__ = ("_host", "_port", "_gate")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._gate = gate

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        gate = self._gate

        def factory() -> asyncio.Protocol:
            return _GatedProtocol(gate, server())

        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, backlog=self._backlog)


class AcceptErrorFilter:
    """The loop's exception handler while the server runs: ``accept()`` failures (out of file descriptors)
    become one warning line at most every few seconds, with a count; everything else goes on as before."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        self._limiter = ErrorRateLimiter(rate_per_s=0.1, burst=1)

    def install(self) -> None:
        self._loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_FAILED:
            if (adm := self._limiter.admit("accept")) is not None:
                exc = context.get("exception")
                more = f"; {adm.suppressed} more since the last report" if adm.suppressed else ""
                log.warning("dashboard: cannot accept connections: %s (new pages wait until descriptors free "
                            "up%s)", exc, more)
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


class HttpErrorLog:
    """The logger aiohttp's connection handlers are given: a request aiohttp itself cannot parse (bad
    bytes, control characters, a header too long: it answers 400) becomes one warning line, rate limited,
    instead of a traceback each; any other error keeps its traceback, rate limited too."""

    def __init__(self) -> None:
        self._limiter = ErrorRateLimiter(rate_per_s=0.2, burst=5)

    def _admitted(self, key: str) -> str | None:
        adm = self._limiter.admit(key)
        if adm is None:
            return None
        return f" ({adm.suppressed} more since the last report)" if adm.suppressed else ""

    def exception(self, msg: str, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            if (more := self._admitted("parse")) is not None:
                reason = (exc.message or type(exc).__name__).strip().splitlines()[0][:160]
                peer = args[0] if args else "?"
                log.warning("dashboard: %s for an unreadable request from %s: %s%s", exc.code, peer, reason, more)
            return
        if (more := self._admitted("error")) is not None:
            log.error(msg + "%s", *args, more, exc_info=exc)

    error = exception

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        log.warning(msg, *args, **kw)

    def info(self, msg: str, *args: Any, **kw: Any) -> None:
        log.info(msg, *args, **kw)

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        """aiohttp's debug-level reports (non-HTTP bytes on the port) say nothing the 400 does not."""
