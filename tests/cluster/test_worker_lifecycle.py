"""A worker's own lifetime: its backend's background work runs under the worker's supervisor, and a
backend that dies stops the worker (its conversations released, offline published) instead of leaving it
online with steps that can never finish."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest

from stream.cluster.worker import Worker
from stream.mqtt.client import payload_bytes
from stream.mqtt.topics import worker_topic
from stream.params import WorkerParams
from tests.support.broker import Mosquitto
from tests.support.toy_backend import ToyBackend

pytestmark = pytest.mark.mqtt


class DyingBackend(ToyBackend):
    """The toy backend whose micro-batchers fail once the worker is online."""

    def __init__(self, worker_id: str, online: asyncio.Event) -> None:
        super().__init__(worker_id)
        self.online = online

    async def run(self) -> None:
        await self.online.wait()
        raise RuntimeError("batcher thread died")


def test_a_dying_backend_stops_the_worker_and_it_goes_offline(broker: Mosquitto) -> None:
    async def go() -> tuple[Worker, dict[str, object]]:
        online = asyncio.Event()
        worker = Worker(broker.settings, DyingBackend("a", online), WorkerParams("a"))
        run = asyncio.get_running_loop().create_task(worker.run())
        await asyncio.wait_for(worker.connected.wait(), 10)
        online.set()
        await asyncio.wait_for(run, 20)  # returns by itself: nobody called stop()
        async with aiomqtt.Client(**broker.settings.with_client_id("check").client_kwargs()) as c:
            await c.subscribe(worker_topic("a"), qos=1)
            async with asyncio.timeout(10):
                async for m in c.messages:
                    return worker, json.loads(payload_bytes(m))
        raise AssertionError("no retained worker record")

    worker, record = asyncio.run(go())
    assert worker.fatal is not None and "batcher thread died" in worker.fatal
    assert record["status"] == "offline"
