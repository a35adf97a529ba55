"""MQTT faults: a broker that refuses the connection, and malformed input messages, with a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from stream.capture.replay import ReplaySource
from stream.capture.transcript import MqttTranscriptSource
from stream.mqtt.settings import MqttSettings
from stream.sinks.jsonl import JsonlSink
from stream.sinks.mqtt import MqttSink
from tests.contract import check_events, check_message

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
pytestmark = pytest.mark.mqtt


def test_broker_refusing_connection_is_reported_and_other_sinks_keep_running(
        make_runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a free port: nothing listens there, so the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "ev.jsonl"
    mqtt = MqttSink(MqttSettings.from_url(f"mqtt://127.0.0.1:{port}"), max_backoff_s=0.5)
    caplog.set_level(logging.WARNING)

    async def go() -> int:
        rt = make_runtime([JsonlSink(log), mqtt])
        rt.add_source(ReplaySource(DEMO, speed=0), finite=True)
        return await rt.run()
    assert asyncio.run(go()) == 0
    emo = check_events([json.loads(x) for x in log.read_text().splitlines() if '"emotion"' in x])
    assert len(emo) == 11  # the JSONL sink got everything
    assert mqtt.connect_failures >= 1 and mqtt.published == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert any("MQTT broker mqtt://127.0.0.1:" in m and "unavailable" in m for m in msgs), msgs
    assert any("undelivered" in m for m in msgs), msgs  # the end of the run says what was not delivered


def test_malformed_input_messages_are_rejected_and_valid_ones_flow(make_runtime, mosquitto) -> None:
    settings = MqttSettings.from_url(mosquitto.url)
    source = MqttTranscriptSource(settings)
    bad = [b"{not json", b'{"text": "no speaker"}', b'{"speaker": 3, "text": "x"}', b"[1,2]",
           b'{"speaker": "A", "text": "hi", "evil": 1}', b"\xff\xfe"]
    good = [{"speaker": "Alice", "text": "I am really happy today", "utterance_id": "g1"},
            {"speaker": "Bob", "text": "That is great to hear", "utterance_id": "g2"}]

    async def go() -> tuple[list[tuple[str, dict[str, Any]]], Any]:
        rt = make_runtime([MqttSink(settings)])
        rt.add_source(source, finite=False)  # live: runs until stopped
        run = asyncio.create_task(rt.run())
        got: list[tuple[str, dict[str, Any]]] = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="consumer") as c:
            await c.subscribe("pcgnet/room1/emotion", qos=1)
            await c.subscribe("pcgnet/room1/error", qos=1)
            await asyncio.wait_for(source.subscribed.wait(), 10)
            for b in bad[:3]:
                await c.publish("pcgnet/room1/in/utterance", b, qos=1)
            await c.publish("pcgnet/room1/in/utterance", json.dumps(good[0]).encode(), qos=1)
            for b in bad[3:]:
                await c.publish("pcgnet/room1/in/utterance", b, qos=1)
            await c.publish("pcgnet/room1/in/utterance", json.dumps(good[1]).encode(), qos=1)
            async with asyncio.timeout(30):
                async for m in c.messages:
                    got.append((str(m.topic), check_message(str(m.topic), m.payload)))  # type: ignore[arg-type]
                    if sum(t.endswith("/emotion") for t, _ in got) == 2 and \
                            sum(t.endswith("/error") for t, _ in got) >= 5:
                        break
        rt.request_stop()
        assert await asyncio.wait_for(run, 15) == 0
        return got, rt
    got, rt = asyncio.run(go())
    emo = [p for t, p in got if t == "pcgnet/room1/emotion"]
    assert [(e["utterance_id"], e["speaker"]) for e in emo] == [("g1", "Alice"), ("g2", "Bob")]
    errors = [p for t, p in got if t == "pcgnet/room1/error"]
    assert all(e["type"] == "error" and e["category"] == "input" for e in errors)
    text = " | ".join(e["message"] for e in errors)
    for needle in ("invalid JSON", "missing required field 'speaker'", "speaker must be a string",
                   "must be a JSON object", "unknown field"):
        assert needle in text, text
    # the rate limiter admits a burst of 5 per session: the 6th bad message is counted, not published
    assert source.rejected == 6 and len(errors) == 5
