"""The dashboard's HTTP server (aiohttp): the page, its two static files, and the events as server-sent
events (``/events``).

Safe by default: it binds 127.0.0.1; any other address needs a token (``--web-token`` or
``PCGNET_WEB_TOKEN``), compared in constant time. Without a token only loopback ``Host`` headers are
served, so a web site re-binding its DNS name to 127.0.0.1 cannot read the dashboard. Every response
carries a Content-Security-Policy that allows scripts and styles from this server only (no inline
script), and the page renders untrusted text (transcripts, speaker names) with ``textContent`` only.

Hostile clients: every socket passes :mod:`.gate` (caps per client and in all, oldest idle evicted), a
connection must send a complete request head within ``idle_timeout_s``, an event stream that stops
draining for ``stall_timeout_s`` is closed, and the token is checked before a stream takes a slot. A
malformed header the server reads (Host, a non-UTF-8 token or cookie, Last-Event-ID) is a 400 and one
log line (rate limited), never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from ..channel import ChannelClosed
from ..mqtt.inbound import ErrorRateLimiter
from ..params import WebParams
from ..sinks.jsonl import dumps
from .gate import AcceptErrorFilter, ConnectionGate, GatedSite, HttpErrorLog, fd_budget
from .hub import DashboardHub, Page, WireEvent
from .palette import EMOTION_COLOURS, OTHER_COLOUR

log = logging.getLogger(__name__)

ENV_TOKEN = "PCGNET_WEB_TOKEN"
COOKIE = "pcgnet_token"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC = {  # path -> (package file, content type)
    "/": ("index.html", "text/html"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/style.css": ("style.css", "text/css"),
}


_EVENT_ID = re.compile(r"[0-9a-f]{1,32}\.[0-9]{1,18}")
"""What this server sends as an SSE id (``<instance>.<seq>``); a Last-Event-ID of any other shape is a 400."""
_PORT = re.compile(r"[0-9]{1,5}")


class WebAccessError(ValueError):
    """``--web`` / ``--web-token`` cannot be honoured safely; the message says what to change."""


class BadRequest(ValueError):
    """A malformed request header; the message (one line, no echo of the value) goes into the 400."""


def host_name(header: str | None) -> str:
    """The host of a ``Host`` header, lower case, brackets removed; :class:`BadRequest` when malformed."""
    if not header:
        raise BadRequest("no Host header")
    if not header.isascii() or not header.isprintable() or len(header) > 260:
        raise BadRequest("malformed Host header")
    if header.startswith("["):
        name, sep, rest = header[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadRequest("malformed Host header")
        port = rest[1:] if rest else None
    else:
        name, sep, port_s = header.partition(":")
        port = port_s if sep else None
    if port is not None and (not _PORT.fullmatch(port) or int(port) > 65535):
        raise BadRequest("Host header with a port outside 0..65535")
    if not name:
        raise BadRequest("Host header without a host")
    return name.lower()


def checked_token(value: str, where: str) -> str:
    """A presented token as it came, or :class:`BadRequest` when it is not printable UTF-8."""
    try:
        value.encode("utf-8")  # bytes that were not UTF-8 arrive as lone surrogates
    except UnicodeEncodeError:
        raise BadRequest(f"the token in the {where} is not UTF-8") from None
    if not value.isprintable():
        raise BadRequest(f"the token in the {where} holds control characters")
    return value


def resume_id(header: str | None) -> str | None:
    """The Last-Event-ID header when it has the shape this server sends, None when absent."""
    if header is None or header == "":
        return None
    if not header.isascii() or not _EVENT_ID.fullmatch(header):
        raise BadRequest("malformed Last-Event-ID (expected INSTANCE.SEQ as this server sends)")
    return header


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def parse_bind(spec: str) -> Bind:
    """``[HOST:]PORT`` (IPv6 as ``[::1]:8080``); the host defaults to 127.0.0.1. Port 0 picks a free port."""
    host, sep, port_s = spec.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]")
    if sep and not host:
        raise WebAccessError(f"{spec!r}: empty host (use 0.0.0.0:PORT to listen on every interface)")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise WebAccessError(f"{spec!r}: expected [HOST:]PORT with a port from 0 to 65535")
    return Bind(host, int(port_s))


def resolve_token(bind: Bind, token: str | None, env: dict[str, str], params: WebParams) -> str | None:
    """The token the server requires (flag, else environment), or None on loopback without one."""
    token = token or env.get(ENV_TOKEN) or None
    if token is None:
        if not bind.loopback:
            raise WebAccessError(f"refusing to serve the dashboard on {bind.host} without a token: anyone who "
                                 f"can reach it would read the conversation; set {ENV_TOKEN} (or --web-token) "
                                 f"or bind 127.0.0.1")
        return None
    if len(token) < params.min_token_chars:
        raise WebAccessError(f"the web token is {len(token)} characters; use at least {params.min_token_chars} "
                             f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    return token


def _sse(ev: WireEvent, event_id: str | None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {ev.data}\n\n"


class DashboardServer:
    """Serves the page and streams the hub's events to each open page.

    Args:
        hub: history and fan-out.
        bind: address to listen on.
        token: required from every request when set (query ``?token=``, then a cookie; or a Bearer header).
        params: heartbeat and limits.
        title: shown in the page header (e.g. the checkpoint's name).
    """

    def __init__(self, hub: DashboardHub, bind: Bind, *, token: str | None, params: WebParams,
                 title: str = "PCGNet live") -> None:
        self.hub = hub
        self.bind = bind
        self.token = token
        self.params = params
        self.title = title
        self.port: int | None = None
        self._assets = {path: (resources.files(__package__).joinpath("static", name).read_bytes(), ctype)
                        for path, (name, ctype) in STATIC.items()}
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self.gate = ConnectionGate(fd_budget(params.max_connections), params.max_connections_per_client)
        self._accept_filter: AcceptErrorFilter | None = None
        self._bad_requests = ErrorRateLimiter(rate_per_s=0.2, burst=5)

    @property
    def url(self) -> str:
        return self.bind.url(self.port)

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._static)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/events", self._events)
        app.on_response_prepare.append(self._headers)
        return app

    async def start(self) -> str:
        """Listen; raises OSError (address in use, not an address of this machine)."""
        # keepalive_timeout bounds the wait for every request head, the first one included (aiohttp >= 3.10)
        self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0,
                                     keepalive_timeout=self.params.idle_timeout_s, logger=HttpErrorLog())
        await self._runner.setup()
        try:
            site = GatedSite(self._runner, self.bind.host, self.bind.port, self.gate)
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._runner.addresses[0][1])
        self._accept_filter = AcceptErrorFilter(asyncio.get_running_loop())
        self._accept_filter.install()
        return self.url

    async def close(self) -> None:
        """End every event stream, then stop listening."""
        self.hub.close()
        if self._streams:
            await asyncio.wait(self._streams, timeout=1.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._accept_filter is not None:
            self._accept_filter.uninstall()
            self._accept_filter = None

    # -- access -----------------------------------------------------------------------------------

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)

    @staticmethod
    def _presented(request: web.Request) -> tuple[str | None, bool]:
        """(token the request carries, whether it came in the query string); BadRequest when malformed."""
        if "token" in request.query:
            return checked_token(request.query["token"], "query"), True
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return checked_token(auth[7:], "Authorization header"), False
        cookie = request.cookies.get(COOKIE)
        return (None if cookie is None else checked_token(cookie, "cookie")), False

    def _bad_request(self, request: web.Request, reason: str) -> web.Response:
        peer = request.remote or "?"
        if (adm := self._bad_requests.admit(peer)) is not None:
            more = f" ({adm.suppressed} more from there since the last report)" if adm.suppressed else ""
            log.warning("dashboard: 400 for %s %s from %s: %s%s", request.method, request.path[:80], peer,
                        reason, more)
        return web.Response(status=400, text=f"bad request: {reason}\n")

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        with self.gate.busy(request.transport):
            try:
                return await self._checked(request, handler)
            except BadRequest as exc:
                return self._bad_request(request, str(exc))
            except (UnicodeError, ValueError) as exc:  # any other malformed input met while reading a request
                return self._bad_request(request, f"{type(exc).__name__}: {str(exc)[:120]}")

    async def _checked(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        host = host_name(request.headers.get("Host"))
        if self.token is None:
            if host not in LOOPBACK_HOSTS and host != self.bind.host:
                return web.Response(status=403, text="unexpected Host header (the dashboard answers to "
                                                     "127.0.0.1 and localhost only)\n")
            return await handler(request)
        given, in_query = self._presented(request)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.Response(status=401, text="this dashboard needs its token: open it once as "
                                                 "http://HOST:PORT/?token=TOKEN\n")
        if in_query and request.path == "/":  # keep the token out of the address bar and history
            resp = web.Response(status=303, headers={"Location": "/"})
            resp.set_cookie(COOKIE, given, httponly=True, samesite="Strict", path="/")
            return resp
        return await handler(request)

    # -- routes -----------------------------------------------------------------------------------

    async def _static(self, request: web.Request) -> web.Response:
        asset = self._assets.get(request.path)
        if asset is None:
            raise web.HTTPNotFound()
        body, ctype = asset
        return web.Response(body=body, content_type=ctype, charset="utf-8")

    def _hello(self, resumed: bool) -> WireEvent:
        return WireEvent(dumps({"type": "hello", "instance": self.hub.instance, "resumed": resumed,
                                "title": self.title, "palette": EMOTION_COLOURS, "other_colour": OTHER_COLOUR}))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        page, backlog, resumed = self.hub.attach(resume_id(request.headers.get("Last-Event-ID")))
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        try:
            await self._send(request, resp, b"")
            await self._send(request, resp, _sse(self._hello(resumed), None).encode())
            for i in range(0, len(backlog), 500):
                await self._send(request, resp, "".join(_sse(ev, self.hub.event_id(ev.seq or 0))
                                                        for ev in backlog[i:i + 500]).encode())
            if self.hub.latest_figures is not None:
                await self._send(request, resp, _sse(self.hub.latest_figures, None).encode())
            await self._stream(request, page, resp)
        except (ConnectionError, ChannelClosed):
            pass
        finally:
            self.hub.detach(page)
            if task is not None:
                self._streams.discard(task)
        return resp

    async def _send(self, request: web.Request, resp: web.StreamResponse, data: bytes) -> None:
        """Write (the head first), waiting at most ``stall_timeout_s`` for the socket to drain; a browser
        that stopped reading has its connection closed (ConnectionResetError ends its stream)."""
        try:
            async with asyncio.timeout(self.params.stall_timeout_s):
                if not resp.prepared:
                    await resp.prepare(request)
                if data:
                    await resp.write(data)
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()
            if (adm := self._bad_requests.admit("stalled")) is not None:
                more = f" ({adm.suppressed} more since the last report)" if adm.suppressed else ""
                log.warning("dashboard: closed an event stream to %s that stopped reading for %.0f s%s",
                            request.remote or "?", self.params.stall_timeout_s, more)
            raise ConnectionResetError("the page stopped reading") from None

    async def _stream(self, request: web.Request, page: Page, resp: web.StreamResponse) -> None:
        reported_drops = 0
        while True:
            try:
                async with asyncio.timeout(self.params.heartbeat_s):
                    first = await page.queue.get()
            except TimeoutError:
                await self._send(request, resp, b": ping\n\n")
                continue
            except ChannelClosed:
                if page.evicted:  # a newer page took the slot: say so, so this one does not reconnect
                    await self._send(request, resp, _sse(WireEvent(dumps({
                        "type": "evicted", "max_pages": self.params.max_clients})), None).encode())
                raise
            batch = [first]
            while (ev := page.queue.get_nowait()) is not None and len(batch) < 500:
                batch.append(ev)
            chunk = "".join(_sse(ev, None if ev.seq is None else self.hub.event_id(ev.seq)) for ev in batch)
            if page.dropped != reported_drops:
                reported_drops = page.dropped
                chunk += _sse(WireEvent(dumps({"type": "lag", "dropped": reported_drops})), None)
            await self._send(request, resp, chunk.encode())


async def serve_until_signal() -> None:
    """Wait for SIGINT or SIGTERM (the analysis is over; the page stays up until then)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
