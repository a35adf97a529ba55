"""The dashboard's hub and HTTP server in process: history and catch-up, bounded per-page queues, the
token and Host checks, the security headers, and the SSE stream as a browser reads it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from stream.params import WebParams
from stream.web.hub import DashboardHub
from stream.web.server import (
    COOKIE,
    Bind,
    DashboardServer,
    WebAccessError,
    parse_bind,
    resolve_token,
)

TOKEN = "correct-horse-battery-staple"


def emotion(session: str, i: int) -> dict[str, Any]:
    return {"type": "emotion", "session": session, "utterance_id": f"u{i:04d}", "speaker": "A", "text": f"t{i}"}


def test_late_page_gets_the_history_first_then_live_events_exactly_once() -> None:
    async def go() -> None:
        hub = DashboardHub(WebParams())
        for i in range(5):
            hub.publish(emotion("s", i))
        page, backlog, resumed = hub.attach()
        assert not resumed and [json.loads(e.data)["utterance_id"] for e in backlog] == [f"u{i:04d}" for i in range(5)]
        hub.publish(emotion("s", 5))
        assert json.loads((await page.queue.get()).data)["utterance_id"] == "u0005"
        # an EventSource reconnecting with Last-Event-ID gets only what it has not seen
        _, again, resumed = hub.attach(hub.event_id(backlog[2].seq or 0))
        assert resumed and [json.loads(e.data)["utterance_id"] for e in again] == ["u0003", "u0004", "u0005"]
        # ... unless the id comes from another process (restarted server): then everything
        _, fresh, resumed = hub.attach("deadbeef.3")
        assert not resumed and len(fresh) == 6
    asyncio.run(go())


def test_a_page_that_does_not_read_loses_its_oldest_events_and_nothing_else_waits() -> None:
    async def go() -> None:
        params = WebParams(client_queue_events=10, history_events_per_session=50, history_sessions=2)
        hub = DashboardHub(params)
        stuck, _, _ = hub.attach()
        for i in range(120):  # publish never awaits: a stuck page cannot slow it down
            hub.publish(emotion("s1", i))
        assert len(stuck.queue) == 10 and stuck.dropped == 110
        assert json.loads((await stuck.queue.get()).data)["utterance_id"] == "u0110"
        for s in ("s2", "s3"):
            hub.publish(emotion(s, 0))
        _, backlog, _ = hub.attach()
        sessions = {json.loads(e.data)["session"] for e in backlog}
        assert sessions == {"s2", "s3"}  # history is bounded in sessions (least recently active dropped) ...
        hub.publish(emotion("s3", 1))
        assert len(list(hub._iter_history())) <= 2 * 50  # ... and in events per session
    asyncio.run(go())


def test_bind_parsing_and_token_policy() -> None:
    assert parse_bind("8080") == Bind("127.0.0.1", 8080)
    assert parse_bind("[::1]:0") == Bind("::1", 0) and parse_bind("[::1]:0").loopback
    assert parse_bind("localhost:9").loopback and not parse_bind("0.0.0.0:9").loopback
    for bad in ("", "host:", ":80", "x:99999", "80a"):
        with pytest.raises(WebAccessError):
            parse_bind(bad)
    params = WebParams()
    assert resolve_token(Bind("127.0.0.1", 1), None, {}, params) is None
    assert resolve_token(Bind("0.0.0.0", 1), None, {"PCGNET_WEB_TOKEN": TOKEN}, params) == TOKEN
    assert resolve_token(Bind("0.0.0.0", 1), TOKEN, {}, params) == TOKEN
    with pytest.raises(WebAccessError, match="without a token"):
        resolve_token(Bind("192.168.1.5", 1), None, {}, params)
    with pytest.raises(WebAccessError, match="at least"):
        resolve_token(Bind("0.0.0.0", 1), "short", {}, params)


async def _serve(token: str | None, params: WebParams | None = None,
                 host: str = "127.0.0.1") -> tuple[DashboardServer, str]:
    params = params or WebParams(heartbeat_s=0.2)
    server = DashboardServer(DashboardHub(params), Bind(host, 0), token=token, params=params)
    return server, await server.start()


async def _read_sse(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str | None, dict[str, Any]]]:
    """The first n data messages (id, JSON) of an event stream."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    ev_id = None
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            ev_id = line[4:]
        elif line.startswith("data: "):
            out.append((ev_id, json.loads(line[6:])))
            ev_id = None
            if len(out) == n:
                break
    return out


def test_token_is_required_everywhere_and_kept_in_a_cookie() -> None:
    async def go() -> None:
        server, url = await _serve(TOKEN)
        try:
            async with aiohttp.ClientSession() as c:
                for path in ("", "static/app.js", "events"):
                    async with c.get(url + path) as r:
                        assert r.status == 401, path
                async with c.get(url + "?token=wrong-" + TOKEN) as r:
                    assert r.status == 401
                async with c.get(url + "events", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP address, as browsers do
            async with aiohttp.ClientSession(cookie_jar=jar) as c:  # the browser flow: ?token= once, then the cookie
                async with c.get(url + "?token=" + TOKEN, allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/"
                    cookie = r.cookies[COOKIE]
                    assert cookie["httponly"] and cookie["samesite"] == "Strict"
                async with c.get(url) as r:
                    assert r.status == 200 and "app.js" in await r.text()
        finally:
            await server.close()
    asyncio.run(go())


def test_a_non_loopback_bind_checks_the_token_on_every_request() -> None:
    async def go() -> None:
        server, url = await _serve(TOKEN, host="0.0.0.0")  # reached here through loopback only
        port = url.rstrip("/").rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}/"
        try:
            async with aiohttp.ClientSession() as c:
                for path in ("", "static/app.js", "events"):
                    async with c.get(base + path) as r:
                        assert r.status == 401, path
                async with c.get(base + "events", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert r.status == 200
        finally:
            await server.close()
    asyncio.run(go())


def test_loopback_without_token_answers_only_to_loopback_host_names() -> None:
    async def go() -> None:
        server, url = await _serve(None)
        try:
            async with aiohttp.ClientSession() as c:
                async with c.get(url) as r:
                    assert r.status == 200
                    csp = r.headers["Content-Security-Policy"]
                    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
                async with c.get(url + "static/app.js") as r:
                    assert r.status == 200 and r.content_type == "text/javascript"
                async with c.get(url + "static/../../params.py") as r:
                    assert r.status == 404
                # a DNS-rebinding page reaches 127.0.0.1 under its own host name
                async with c.get(url, headers={"Host": f"evil.example:{server.port}"}) as r:
                    assert r.status == 403
        finally:
            await server.close()
    asyncio.run(go())


def test_event_stream_sends_hello_history_live_events_and_ends_on_close() -> None:
    async def go() -> None:
        params = WebParams(heartbeat_s=0.2)
        server, url = await _serve(None, params)
        hub = server.hub
        hub.publish(emotion("s", 0))
        try:
            async with aiohttp.ClientSession() as c:
                async with c.get(url + "events") as r:
                    assert "Content-Security-Policy" in r.headers
                    (hid, hello), (eid, first) = await asyncio.wait_for(_read_sse(r, 2), 5)
                    assert hello["type"] == "hello" and hid is None and hello["palette"]["anger"]
                    assert first["utterance_id"] == "u0000" and eid == hub.event_id(1)
                    hub.publish(emotion("s", 1))
                    hub.publish_transient({"type": "figures", "events": 2})
                    (eid, live), (fid, figures) = await asyncio.wait_for(_read_sse(r, 2), 5)
                    assert live["utterance_id"] == "u0001" and eid == hub.event_id(2)
                    assert figures["type"] == "figures" and fid is None  # figures never move Last-Event-ID
                    await asyncio.wait_for(server.close(), 5)  # ends the open stream instead of waiting on it
                    assert (await asyncio.wait_for(r.content.read(), 5)).strip() == b""  # EOF, nothing more
        finally:
            await server.close()
    asyncio.run(go())
