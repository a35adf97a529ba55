"""Same input, same events in every deployment (issue 12): one script of MQTT inputs, some without ids or
times and one invalid, through ``live.py --transcript mqtt`` and through a cluster worker process (inputs
with MQTT 3.1.1 to NATS's MQTT listener, events from the MQTT 5 broker)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from stream.mqtt.settings import MqttSettings
from stream.mqtt.topics import input_topic
from tests.contract import check_message
from tests.support.broker import Mosquitto
from tests.support.checkpoints import make_tiny_checkpoint
from tests.support.cluster import REPO, EventWatch, start_js_worker
from tests.support.nats import NatsServer

pytestmark = pytest.mark.mqtt

SESSION = "same input"
INPUTS: list[bytes] = [
    json.dumps({"speaker": "Alice", "text": "Good morning everyone, the numbers are finally in."}).encode(),
    b"{not json",  # rejected, yet it takes its place in the numbering (u0002) in both deployments
    json.dumps({"speaker": "Bob", "text": "That is wonderful news, I am thrilled!", "t_end": 9.5}).encode(),
    json.dumps({"speaker": "Alice", "text": "Wait, what? Nobody told me about this.", "utterance_id": "x7"}).encode(),
    json.dumps({"speaker": "Bob", "text": "Sorry about that.", "t_start": 12.0}).encode(),
    json.dumps({"speaker": "Alice", "text": "Fine. Let us move on then."}).encode(),
]
N_VALID = 5


async def publish(settings: MqttSettings, session: str, payloads: list[bytes], nats_mqtt_port: int | None) -> None:
    """To the MQTT 5 broker (live.py), or with MQTT 3.1.1 to NATS's MQTT listener (the cluster's input)."""
    if nats_mqtt_port is not None:
        client = aiomqtt.Client("127.0.0.1", nats_mqtt_port, identifier=f"asr-{os.getpid()}",
                                protocol=aiomqtt.ProtocolVersion.V311)
    else:
        client = aiomqtt.Client(**settings.with_client_id(f"asr-{os.getpid()}").client_kwargs())
    async with client as c:
        for p in payloads:
            await c.publish(input_topic(session), p, qos=1)


async def collect(settings: MqttSettings, stop_after: int, timeout_s: float) -> list[dict[str, Any]]:
    """Validated live (non-retained) emotion/shift/speaker events of SESSION, until ``stop_after`` emotions."""
    out: list[dict[str, Any]] = []
    async with aiomqtt.Client(**settings.with_client_id(f"robot-{os.getpid()}").client_kwargs()) as c:
        for kind in ("emotion", "shift", "speakers/+"):
            await c.subscribe(f"pcgnet/+/{kind}", qos=1)
        ready.set()
        async with asyncio.timeout(timeout_s):
            async for m in c.messages:
                ev = check_message(str(m.topic), bytes(m.payload))  # type: ignore[arg-type]
                if ev is None or m.retain or ev.get("session") != SESSION or ev["type"] == "error":
                    continue
                out.append(ev)
                if sum(e["type"] == "emotion" for e in out) == stop_after and ev["type"] == "speaker":
                    return out
    return out


ready = asyncio.Event()


async def through_live(settings: MqttSettings, url: str, checkpoint: Path) -> list[dict[str, Any]]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "live.py"), "--transcript", "mqtt", "--mqtt", url, "--checkpoint", str(checkpoint),
        "--no-tui", cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        # live.py is up and subscribed once a probe session gets its emotion event
        async with aiomqtt.Client(**settings.with_client_id("probe").client_kwargs()) as c:
            await c.subscribe("pcgnet/probe/emotion", qos=1)
            async with asyncio.timeout(240):
                while True:
                    await c.publish(input_topic("probe"), b'{"speaker": "P", "text": "probe"}', qos=1)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            async for _ in c.messages:
                                break
                            break
        return await run_and_collect(settings, None)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert b"Traceback" not in err, err.decode(errors="replace")[-3000:]


async def run_and_collect(settings: MqttSettings, nats_mqtt_port: int | None) -> list[dict[str, Any]]:
    global ready
    ready = asyncio.Event()
    task = asyncio.create_task(collect(settings, N_VALID, timeout_s=120))
    await asyncio.wait_for(ready.wait(), 10)
    await publish(settings, SESSION, INPUTS, nats_mqtt_port)
    return await task


async def through_cluster(broker: Mosquitto, nats_server: NatsServer, tmp_path: Path,
                          checkpoint: Path) -> list[dict[str, Any]]:
    async with EventWatch(broker.settings) as watch:
        worker = start_js_worker("w1", nats_server.url, broker.port, tmp_path, "--checkpoint", str(checkpoint),
                                 toy=False)
        try:
            await watch.until(lambda: "w1" in watch.online, 240, "worker online")
        except BaseException:
            worker.stop()
            raise
    try:
        return await run_and_collect(broker.settings, nats_server.mqtt_port)
    finally:
        worker.stop()
        assert "Traceback" not in worker.log_tail(4000), worker.log_tail(4000)


def test_live_mqtt_input_and_a_cluster_worker_give_the_same_events(broker: Mosquitto, nats_server: NatsServer,
                                                                    tmp_path: Path) -> None:
    checkpoint = make_tiny_checkpoint(tmp_path / "ck")
    live = asyncio.run(through_live(broker.settings, broker.url, checkpoint))
    clustered = asyncio.run(through_cluster(broker, nats_server, tmp_path, checkpoint))

    def key(e: dict[str, Any]) -> tuple[Any, ...]:
        return (e["type"], e["event_id"], e["utterance_id"], e.get("t_start"), e.get("t_end"), e.get("expression"))

    assert [key(e) for e in live] == [key(e) for e in clustered]
    emotions = [e for e in live if e["type"] == "emotion"]
    assert [e["utterance_id"] for e in emotions] == ["u0001", "u0003", "x7", "u0005", "u0006"]
    # times estimated from the conversation: the first utterance lasts as long as its text takes to say
    first = emotions[0]
    assert first["t_start"] == 0.0 and first["t_end"] > 1.0
    assert all(e["t_end"] > e["t_start"] for e in emotions)
    for a, b in zip(emotions, [e for e in clustered if e["type"] == "emotion"], strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=2e-5)
        assert b["worker_id"] == "w1" and "worker_id" not in a
