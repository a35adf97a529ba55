"""A flood of hostile input messages through a real broker: each rejected, errors rate-limited on the
error topic and in the log, valid utterances interleaved with the flood all analysed."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiomqtt
import pytest

from stream.capture.transcript import MqttTranscriptSource
from stream.mqtt.client import install_loop_exception_handler
from stream.mqtt.inbound import ErrorRateLimiter
from stream.mqtt.settings import MqttSettings
from stream.sinks.mqtt import MqttSink
from tests.contract import check_message
from tests.waiting import DEADLINE_S, until

pytestmark = [pytest.mark.mqtt]

HOSTILE = [
    b"{not json",
    b"\xff\xfe\x00garbage",
    b"[" * 5000 + b"]" * 5000,
    b'{"speaker": "A", "text": "x", "t_start": NaN}',
    b'{"speaker": "A", "text": "x", "t_end": 1e999}',
    b'{"speaker": "A\\u0000B", "text": "nul"}',
    b'{"speaker": "A", "text": "\\u001b[2J\\u001b[Hcleared your terminal"}',
    b'{"speaker": ["A"], "text": "x"}',
    b'{"speaker": "A", "text": "x", "__proto__": {"admin": true}}',
    b'{"speaker": "A", "speaker": "B", "text": "dup"}',
    b'{"text": "no speaker"}',
    b'{"speaker": "A", "text": "x", "t_start": 5, "t_end": 1}',
    b'{"speaker": "A", "text": "' + b"x" * 100_000 + b'"}',  # huge payload
    b"",
]


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_flood_of_hostile_messages(broker_factory, runtime_factory, caplog) -> None:
    caplog.set_level(logging.INFO)
    broker = broker_factory()
    broker.start()
    settings = MqttSettings.from_url(broker.url, env={})
    source = MqttTranscriptSource(settings)
    clock = ManualClock()  # the error-report buckets refill only when the test moves this clock
    source.limiter = ErrorRateLimiter(clock=clock)
    n_rounds = 60  # 60 x 14 hostile messages, a valid one after every round
    sent_bad = n_rounds * (len(HOSTILE) + 1) + 1

    async def main() -> tuple[list[dict], list[dict]]:
        install_loop_exception_handler()
        rt = runtime_factory([MqttSink(settings)])
        rt.add_source(source, finite=False)
        run = asyncio.create_task(rt.run())
        emotions: list[dict] = []
        errors: list[dict] = []
        async with aiomqtt.Client(**settings.with_client_id("attacker").client_kwargs()) as c, \
                aiomqtt.Client(**settings.with_client_id("watcher").client_kwargs()) as w:
            await w.subscribe("pcgnet/+/emotion", qos=1)
            await w.subscribe("pcgnet/+/error", qos=1)
            await asyncio.wait_for(source.subscribed.wait(), DEADLINE_S)
            for r in range(n_rounds):
                for bad in HOSTILE:
                    await c.publish("pcgnet/room/in/utterance", bad, qos=1)
                # wrong topic shapes and injected wildcards / encodings in the session level
                await c.publish("pcgnet/%zz/in/utterance", b'{"speaker":"A","text":"x"}', qos=1)
                await c.publish("pcgnet/room/in/utterance", json.dumps(
                    {"speaker": "Alice", "text": f"valid message number {r}", "utterance_id": f"v{r:03d}"}).encode(),
                    qos=1)
            await until(lambda: source.rejected == sent_bad - 1, "every hostile message of the flood read")
            clock.now += 2.0  # the buckets refill; the next report carries the suppressed count
            await c.publish("pcgnet/room/in/utterance", b"{still not json", qos=1)
            try:
                async with asyncio.timeout(DEADLINE_S):
                    async for m in w.messages:
                        p = check_message(str(m.topic), bytes(m.payload))
                        (emotions if str(m.topic).endswith("/emotion") else errors).append(p)
                        if len(emotions) >= n_rounds and any("suppressed" in e["message"] for e in errors):
                            break
            except TimeoutError:
                pass
        rt.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0
        return emotions, errors

    emotions, errors = asyncio.run(main())
    rejected_logged = [r for r in caplog.records if "rejected input" in r.getMessage()]
    print(f"\nhostile flood: {sent_bad} bad + {n_rounds} valid messages -> "
          f"{len(emotions)} emotion events, {source.rejected} rejected, {len(errors)} error events, "
          f"{len(rejected_logged)} log lines")
    # valid traffic kept flowing: every valid message analysed, in order
    assert [e["utterance_id"] for e in emotions] == [f"v{r:03d}" for r in range(n_rounds)]
    # every hostile message rejected (none became an utterance)
    assert source.rejected == sent_bad
    # ... but reported at a bounded rate: with the clock still, each session's burst of 5 (room and the
    # malformed topic's), then one report on room once the clock moved
    room = [e["message"] for e in errors if e["session"] == "room"]
    assert len(room) == 5 + 1, room
    assert len(errors) <= 2 * 5 + 1, errors
    assert len(rejected_logged) == len(errors)  # one log line per admitted report, none for suppressed ones
    # the report after the pause counts exactly what was suppressed on that session before it
    assert "suppressed" in room[-1], room
    n_suppressed = int(room[-1].rsplit("(", 1)[1].split(" ")[0])
    assert n_suppressed == n_rounds * len(HOSTILE) - (len(room) - 1) > 0
    for e in errors:  # the error text is bounded and carries no raw control characters
        assert len(e["message"]) < 400 and not any(ord(ch) < 32 for ch in e["message"])


def test_session_spray_is_capped(broker_factory, runtime_factory) -> None:
    """Valid messages on hundreds of distinct session ids cannot open unbounded sessions (memory)."""
    from stream.params import LiveParams

    broker = broker_factory()
    broker.start()
    settings = MqttSettings.from_url(broker.url, env={})
    source = MqttTranscriptSource(settings)
    n_spray, cap = 200, 5

    async def main() -> tuple[Any, list[dict]]:
        install_loop_exception_handler()
        rt = runtime_factory([MqttSink(settings)], LiveParams(max_sessions=cap, drain_timeout_s=3.0,
                                                              cancel_timeout_s=2.0))
        rt.add_source(source, finite=False)
        run = asyncio.create_task(rt.run())
        errors: list[dict] = []
        async with aiomqtt.Client(**settings.with_client_id("sprayer").client_kwargs()) as c, \
                aiomqtt.Client(**settings.with_client_id("watcher").client_kwargs()) as w:
            await w.subscribe("pcgnet/+/error", qos=1)
            await w.subscribe("pcgnet/$status/+", qos=1)
            await asyncio.wait_for(source.subscribed.wait(), DEADLINE_S)
            for i in range(n_spray):
                await c.publish(f"pcgnet/spray{i}/in/utterance",
                                json.dumps({"speaker": "X", "text": "hello"}).encode(), qos=1)
            await until(lambda: rt.analyzer.processed + rt.sessions_refused >= n_spray, "every spray message handled")
            rt.request_stop()  # the sink drains its inbox, then says offline: every error event comes before
            async with asyncio.timeout(DEADLINE_S):
                async for m in w.messages:
                    payload = json.loads(bytes(m.payload))
                    if str(m.topic).startswith("pcgnet/$status/"):
                        if payload["state"] == "offline":
                            break
                    else:
                        errors.append(payload)
        assert await asyncio.wait_for(run, DEADLINE_S) == 0
        return rt, errors

    rt, errors = asyncio.run(main())
    print(f"\nsession spray: {n_spray} session ids -> {rt.analyzer.processed} sessions opened, "
          f"{rt.sessions_refused} utterances refused, {len(errors)} error events")
    assert rt.analyzer.processed == cap and rt.sessions_refused == n_spray - cap
    assert 1 <= len(errors) <= 5 and all("max_sessions" in e["message"] for e in errors)


def test_input_source_state_is_bounded() -> None:
    source = MqttTranscriptSource(MqttSettings.from_url("mqtt://127.0.0.1:1", env={}))
    source.max_tracked_sessions = 50
    for i in range(500):
        source.to_utterance(f"pcgnet/s{i}/in/utterance", b'{"speaker": "A", "text": "hi"}')
        source.to_utterance("pcgnet/live/in/utterance", b'{"speaker": "B", "text": "still here"}')
    assert len(source._sessions) == 50
    assert "live" in source._sessions and source._sessions["live"].messages == 500  # the active session is kept
