"""The dashboard's server against hostile clients, on loopback with real sockets (bounded in count and
time): malformed headers are 400s with one log line, idle and half-sent connections are closed, a stalled
event stream is closed, the page stays reachable with 300 slow or stalled clients connected, and running
out of file descriptors logs a bounded number of lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stream.params import WebParams
from stream.web.gate import ACCEPT_FAILED, AcceptErrorFilter
from stream.web.hub import DashboardHub
from stream.web.server import Bind, DashboardServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "correct-horse-battery-staple"
GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def run_with_server(params: WebParams, token: str | None,
                    body: Callable[[DashboardServer], Awaitable[None]]) -> None:
    async def go() -> None:
        server = DashboardServer(DashboardHub(params), Bind("127.0.0.1", 0), token=token, params=params)
        await server.start()
        try:
            await asyncio.wait_for(body(server), 60)
        finally:
            await server.close()
    asyncio.run(go())


async def status_of(port: int, request: bytes) -> int:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(request)
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 5)
        return int(line.split()[1])
    finally:
        w.close()


def _events(last_event_id: bytes) -> bytes:
    return b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: " + last_event_id + b"\r\n\r\n"


# (name, token server?, request or a function of the hub's instance id, expected status)
MALFORMED: list[tuple[str, bool, Any, int]] = [
    ("bearer not UTF-8", True, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n\r\n", 400),
    ("cookie not UTF-8", True, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: pcgnet_token=\xff\xfe\r\n\r\n", 400),
    ("query token not UTF-8", True, b"GET /?token=%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 401),
    ("Host port 99999", False, b"GET / HTTP/1.1\r\nHost: localhost:99999\r\n\r\n", 400),
    ("Host port 99999, token", True, b"GET / HTTP/1.1\r\nHost: localhost:99999\r\n\r\n", 400),
    ("Host port not a number", False, b"GET / HTTP/1.1\r\nHost: localhost:8x\r\n\r\n", 400),
    ("Host unclosed bracket", False, b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    ("Host not ASCII", False, b"GET / HTTP/1.1\r\nHost: \xc3\xa9x\r\n\r\n", 400),
    ("no Host", False, b"GET / HTTP/1.0\r\n\r\n", 400),
    ("Last-Event-ID superscript", False, lambda inst: _events(inst + ".\u00b2".encode()), 400),
    ("Last-Event-ID 5000 digits", False, lambda inst: _events(inst + b"." + b"9" * 5000), 400),
    ("Last-Event-ID of another process", False, lambda inst: _events(b"deadbeef.7"), 200),
    ("control character in a header", False, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x01b\r\n\r\n", 400),
    ("not HTTP", False, b"\xff\xfe\x00garbage\r\n\r\n", 400),
    ("well formed", False, GET, 200),
]


@pytest.mark.parametrize("name,token,request_,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_header_is_a_400_with_one_log_line_never_a_500(
        name: str, token: bool, request_: Any, expected: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def body(server: DashboardServer) -> None:
        assert server.port is not None
        raw = request_(server.hub.instance.encode()) if callable(request_) else request_
        assert await status_of(server.port, raw) == expected
        assert await status_of(server.port, GET) in (200, 401)  # and the server goes on serving

    run_with_server(WebParams(heartbeat_s=0.2), TOKEN if token else None, body)
    ours = [r for r in caplog.records if r.name.startswith(("stream.web", "aiohttp"))]
    assert all(r.exc_info is None and r.levelno < logging.ERROR for r in ours), [r.getMessage() for r in ours]
    if expected == 400 and name != "not HTTP":
        assert len([r for r in ours if r.levelno == logging.WARNING]) == 1, [r.getMessage() for r in ours]
    else:
        assert not [r for r in ours if r.levelno >= logging.WARNING]


def test_a_flood_of_bad_requests_logs_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def body(server: DashboardServer) -> None:
        assert server.port is not None
        for _ in range(60):
            assert await status_of(server.port, b"GET / HTTP/1.1\r\nHost: localhost:99999\r\n\r\n") == 400

    run_with_server(WebParams(), None, body)
    assert 1 <= len(caplog.records) <= 10


async def _closed_within(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), deadline - loop.time())
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        if not data:
            return True
    return False


async def _connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def test_silent_and_half_sent_connections_are_closed_after_the_idle_timeout() -> None:
    async def body(server: DashboardServer) -> None:
        assert server.port is not None
        loop = asyncio.get_running_loop()
        silent = await _connect(server.port)
        slow = await _connect(server.port)
        t0 = loop.time()

        async def trickle() -> None:  # slowloris: a header byte every 0.1 s, never the blank line
            for ch in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
                await loop.sock_sendall(slow, bytes([ch]))
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(trickle())
        try:
            assert await _closed_within(silent, 5.0)
            assert await _closed_within(slow, 5.0)
            assert loop.time() - t0 < 4.0  # 0.5 s idle timeout (+ aiohttp's rounding), not the trickle's 20 s
        finally:
            dripping.cancel()
            await asyncio.gather(dripping, return_exceptions=True)
            silent.close()
            slow.close()
        assert server.gate.open == 0

    run_with_server(WebParams(idle_timeout_s=0.5), None, body)


def test_an_event_stream_that_stops_reading_is_closed_after_the_stall_timeout() -> None:
    async def body(server: DashboardServer) -> None:
        assert server.port is not None
        loop = asyncio.get_running_loop()
        stalled = await _connect(server.port, rcvbuf=4096)
        await loop.sock_sendall(stalled, b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for _ in range(3000):  # the stream is open (bounded wait)
            if server.hub.pages:
                break
            await asyncio.sleep(0.01)
        assert server.hub.pages
        deadline = loop.time() + 30
        blob = "x" * 20_000
        i = 0
        while server.hub.pages and loop.time() < deadline:  # events flow; the page never reads them
            server.hub.publish({"type": "emotion", "session": "s", "utterance_id": f"u{i}", "text": blob})
            i += 1
            await asyncio.sleep(0.002)
        assert not server.hub.pages, "the stalled stream was never closed"
        stalled.close()

    run_with_server(WebParams(stall_timeout_s=0.5, heartbeat_s=0.2), None, body)


async def _read_hello(url: str, session: aiohttp.ClientSession) -> dict[str, Any]:
    import json
    async with session.get(url + "events") as r:
        assert r.status == 200
        async for raw in r.content:
            if raw.startswith(b"data: "):
                obj: dict[str, Any] = json.loads(raw[6:])
                return obj
    raise AssertionError("no hello")


@pytest.mark.parametrize("sources", [[f"127.0.0.{i}" for i in range(2, 12)], ["127.0.0.1"]],
                         ids=["ten-other-addresses", "the-page's-own-address"])
def test_the_page_stays_reachable_with_300_slow_or_stalled_clients_connected(sources: list[str]) -> None:
    async def body(server: DashboardServer) -> None:
        assert server.port is not None
        port = server.port
        loop = asyncio.get_running_loop()
        held: list[socket.socket] = []
        try:
            for i in range(300):
                sock = await _connect(port, sources[i % len(sources)], rcvbuf=4096)
                held.append(sock)
                kind = i % 3
                if kind == 1:  # slowloris: half a request head
                    await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
                elif kind == 2:  # an event stream that is never read
                    await loop.sock_sendall(sock, b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                # kind 0: connected and silent
            await asyncio.sleep(0.5)
            assert server.gate.open <= server.gate.limit
            t0 = loop.time()
            async with aiohttp.ClientSession() as c:
                async with c.get(f"http://127.0.0.1:{port}/") as r:
                    assert r.status == 200 and "app.js" in await r.text()
                hello = await asyncio.wait_for(_read_hello(f"http://127.0.0.1:{port}/", c), 10)
                assert hello["type"] == "hello"
            assert loop.time() - t0 < 10
        finally:
            for sock in held:
                sock.close()

    run_with_server(WebParams(), None, body)


def test_a_page_over_the_limit_takes_the_oldest_slot_which_is_told_and_closed() -> None:
    import json

    async def body(server: DashboardServer) -> None:
        url = f"http://127.0.0.1:{server.port}/events"
        async with aiohttp.ClientSession() as c:
            async with c.get(url) as first:
                assert json.loads((await first.content.readline())[6:])["type"] == "hello"
                async with c.get(url) as second:
                    assert second.status == 200
                    rest = (await asyncio.wait_for(first.content.read(), 5)).decode()
                    assert '"type":"evicted"' in rest  # then the stream ended
                    assert len(server.hub.pages) == 1

    run_with_server(WebParams(max_clients=1, heartbeat_s=0.2), None, body)


def test_accept_failures_are_one_line_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    loop = asyncio.new_event_loop()
    try:
        filt = AcceptErrorFilter(loop)
        filt.install()
        for _ in range(4000):
            loop.call_exception_handler({"message": ACCEPT_FAILED, "exception": OSError(24, "Too many open files")})
        filt.uninstall()
        assert loop.get_exception_handler() is None
    finally:
        loop.close()
    ours = [r for r in caplog.records if r.name.startswith("stream")]
    assert len(ours) == 1 and ours[0].exc_info is None and "Too many open files" in ours[0].getMessage()


FD_SERVER = """
import asyncio, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import logging; logging.basicConfig(level=logging.INFO)
from stream.params import WebParams
from stream.web.hub import DashboardHub
from stream.web.server import Bind, DashboardServer

async def main():
    p = WebParams()
    server = DashboardServer(DashboardHub(p), Bind("127.0.0.1", 0), token=None, params=p)
    await server.start()
    print(server.port, flush=True)
    hog = []
    try:  # what other parts of a process could do: take every descriptor left
        while True:
            hog.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print("exhausted", flush=True)
    await asyncio.sleep(3)
    for fd in hog:
        os.close(fd)
    print("released", flush=True)
    await asyncio.sleep(3)
    await server.close()

asyncio.run(main())
"""


def test_out_of_file_descriptors_logs_a_bounded_number_of_lines_and_recovers(tmp_path: Path) -> None:
    log_path = tmp_path / "stderr.txt"
    with log_path.open("w") as log_file:  # a file, not a pipe: a flood of lines must not block the server
        proc = subprocess.Popen([sys.executable, "-c", FD_SERVER], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=log_file, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "exhausted"
        socks = []
        for _ in range(40):  # knocks for 3 s while no descriptor is free
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.sendall(GET)
            socks.append(s)
        assert proc.stdout.readline().strip() == "released"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(GET)
            assert s.recv(64).startswith(b"HTTP/1.1 200")
        for s in socks:
            s.close()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    err = log_path.read_text(errors="replace")
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err[:100_000], err[:2000]
    assert 1 <= len(err.splitlines()) <= 5, err[:2000]


def test_requests_without_the_token_never_take_or_evict_a_stream_slot() -> None:
    import json

    async def body(server: DashboardServer) -> None:
        url = f"http://127.0.0.1:{server.port}/events"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as c:
            async with c.get(url, headers=auth) as page:
                assert json.loads((await page.content.readline())[6:])["type"] == "hello"
                for bad in ({}, {"Authorization": "Bearer wrong-" + TOKEN}, {"Cookie": "pcgnet_token=nope"}):
                    for _ in range(5):
                        async with c.get(url, headers=bad) as r:
                            assert r.status == 401
                assert len(server.hub.pages) == 1 and not next(iter(server.hub.pages.values())).evicted
                server.hub.publish({"type": "emotion", "session": "s", "utterance_id": "u1"})
                while (line := await asyncio.wait_for(page.content.readline(), 5)) and not line.startswith(b"data"):
                    pass
                assert json.loads(line[6:])["utterance_id"] == "u1"  # the page still streams

    run_with_server(WebParams(max_clients=1, heartbeat_s=0.2), TOKEN, body)


def test_a_page_whose_slot_was_taken_says_so_and_stays_closed(browser: Any) -> None:
    """The page in chromium: its stream is evicted by a newer one (max_clients=1); it shows why and does
    not reconnect (which would evict the newer page in turn)."""
    import threading

    loop = asyncio.new_event_loop()
    params = WebParams(max_clients=1, heartbeat_s=0.2)
    server = DashboardServer(DashboardHub(params), Bind("127.0.0.1", 0), token=None, params=params)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#conn.live", timeout=15_000)

        async def newer() -> None:
            async with aiohttp.ClientSession() as c, c.get(url + "events") as r:
                assert r.status == 200
                seen = b""
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(6):  # longer than EventSource's reconnect delay (3 s)
                        async for line in r.content:
                            seen += line
                assert b'"hello"' in seen and b"evicted" not in seen  # the old page did not come back

        asyncio.run_coroutine_threadsafe(newer(), loop).result(30)
        assert "more pages opened elsewhere" in page.inner_text("#conn")
        page.close()
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
